// What the page says about close codes, errors and notices, in one place.

export const CLOSE_REASONS = {
  1000: 'connection closed',
  1001: 'server going away',
  1006: 'connection lost',
  1008: 'policy violation',
  1009: 'message too big',
  1011: 'server error',
  1012: 'server restarting',
  1013: 'too slow, dropped by the server',
};

// For an error frame without a message of its own.
const ERROR_FALLBACKS = {
  message_too_long: 'Message is too long.',
  invalid_json: 'The server could not read that message.',
  empty_message: 'Message is empty.',
  hub_unavailable: 'Chat is temporarily unavailable. Try again in a moment.',
  rate_limited: 'You are sending too fast. Wait a moment.',
};

// Notices the page words itself; others show the server's own message.
const NOTICE_TEXTS = {
  resume_partial: 'Some messages from while you were away could not be recovered',
};

export const INVALID_RESUME_TEXT =
  'The server no longer knows where you left off (it was restarted); showing its latest messages.';

export const NOT_CONNECTED_TEXT = 'Not connected — your message was not sent. Reconnecting…';

export const UNSENT_TEXT =
  'The connection dropped before your message came back: it may not have been sent.';

// Codes come from the network: a code such as "constructor" must not find Object's own.
function lookUp(table, code) {
  return Object.hasOwn(table, code) ? table[code] : '';
}

/** What to say for an error frame with `code` and no message; `limits` are the server's. */
export function errorFallback(code, limits) {
  if (code === 'sender_too_long') return `Name is too long (max ${limits.maxSenderChars} characters).`;
  return lookUp(ERROR_FALLBACKS, code) || 'The server rejected that.';
}

/** The page's own words for a notice with `code`, or '' to show the server's. */
export function noticeText(code) {
  return lookUp(NOTICE_TEXTS, code);
}

export function messageTooLongText(bytes, maxBytes) {
  return `Message is too long (${bytes} bytes, max ${maxBytes}).`;
}
