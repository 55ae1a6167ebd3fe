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

export const ERROR_FALLBACKS = {
  message_too_long: 'Message is too long.',
  invalid_json: 'The server could not read that message.',
  empty_message: 'Message is empty.',
  sender_too_long: 'Name is too long (max 64 characters).',
  hub_unavailable: 'Chat is temporarily unavailable. Try again in a moment.',
  rate_limited: 'You are sending too fast. Wait a moment.',
};

// Notices the page words itself; others show the server's own message.
export const NOTICE_TEXTS = {
  resume_partial: 'Some messages from while you were away could not be recovered',
};
export const INVALID_RESUME_TEXT =
  'The server no longer knows where you left off (it was restarted); showing its latest messages.';
