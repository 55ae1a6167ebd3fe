// What the server refuses, which its welcome frame states (docs/protocol.md), so that the page
// can say so before sending. Until the first welcome, and with an older server whose welcome
// does not say, the page keeps to the server's defaults; a server set lower then answers with
// an error frame, which gives the text back.

export const DEFAULT_LIMITS = Object.freeze({
  maxMessageBytes: 4096, // TRIO_CHAT_MAX_MESSAGE_BYTES, in bytes of UTF-8
  maxSenderChars: 64, // TRIO_CHAT_MAX_SENDER_CHARS, in characters (code points)
  maxRooms: 32, // TRIO_CHAT_MAX_ROOMS_PER_CONNECTION
  // Whether the server knows rooms (its welcome states max_rooms). One that does not is a
  // single room: the page then sends it no join or leave, which it would refuse.
  speaksRooms: true,
});

function isPositiveInteger(value) {
  return Number.isSafeInteger(value) && value > 0;
}

/**
 * Copies into `limits` (a copy of DEFAULT_LIMITS that the page's parts share) each limit the
 * welcome frame states; one it leaves out or garbles keeps its current value.
 */
export function updateLimits(limits, welcome) {
  if (isPositiveInteger(welcome.max_message_bytes)) {
    limits.maxMessageBytes = welcome.max_message_bytes;
  }
  if (isPositiveInteger(welcome.max_sender_chars)) {
    limits.maxSenderChars = welcome.max_sender_chars;
  }
  limits.speaksRooms = isPositiveInteger(welcome.max_rooms);
  if (limits.speaksRooms) limits.maxRooms = welcome.max_rooms;
}
