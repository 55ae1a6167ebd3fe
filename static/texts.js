// What the page says about close codes, errors and notices, in one place.

import { MAX_ROOM_CHARS } from './room-names.js';

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
  not_joined: 'You are not in that room.',
};

// Notices the page words itself; others show the server's own message.
const NOTICE_TEXTS = {
  resume_partial: 'Some messages from while you were away could not be recovered',
};

export const INVALID_RESUME_TEXT =
  'The server no longer knows where you left off (it was restarted); showing its latest messages.';

export const NOT_CONNECTED_TEXT = 'Not connected — your message was not sent. Reconnecting…';

// Scrollback: the top of a room's log (history-edge.js) and what scrollback.js says.
export const LOAD_OLDER_TEXT = 'Load older messages';
export const LOADING_OLDER_TEXT = 'Loading older messages…';
export const BEGINNING_TEXT = 'Beginning of the conversation';
export const OLDER_UNAVAILABLE_TEXT =
  'Older messages could not be loaded: chat is temporarily unavailable. Try again.';
export const OLDER_NO_ANSWER_TEXT = 'The server did not answer in time. Try again.';

/** Why nothing older is loaded into a log that holds `max` entries already. */
export function olderNotKeptText(max) {
  return `Older messages are not shown: this page keeps the latest ${max} lines of a room.`;
}

/** What screen readers hear once `count` older messages of `room` are in. */
export function olderLoadedText(count, room, complete) {
  const said = [];
  const messages = count === 1 ? '1 older message' : `${count} older messages`;
  if (count) said.push(`Loaded ${messages} in #${room}.`);
  if (complete) said.push(`${BEGINNING_TEXT}.`);
  return said.join(' ');
}

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

export function queueFullText(count) {
  return `${count} messages are still waiting to be sent: wait a moment, then send this one.`;
}

/**
 * Why the server would not let us join `room` (an error frame's `code`), in words for people;
 * '' for a code that is no refusal of a join.
 */
export function joinRefusedText(code, room, limits) {
  const why = {
    invalid_room: `room names are 1-${MAX_ROOM_CHARS} lower-case letters, digits, “-” and “_”`,
    too_many_rooms: `you are in ${limits.maxRooms} rooms, the most one page may be in: leave one first`,
    room_limit: 'the server cannot open a new room now; try one that exists (see “Busiest rooms”)',
    hub_unavailable: 'chat is temporarily unavailable; trying again in a moment',
  };
  return Object.hasOwn(why, code) ? `Could not join #${room}: ${why[code]}.` : '';
}

/** An error frame's `code` about `room` (its "room" field), in words naming the room; '' if none. */
export function roomErrorText(code, room) {
  if (code === 'not_joined') return `You are not in #${room}: that was not sent.`;
  if (code === 'invalid_room') return `“${room}” is not a room name.`;
  return '';
}
