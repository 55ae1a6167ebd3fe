// Room names, as the rooms protocol defines them: 1-64 characters, lower-case ASCII letters,
// digits, '-' and '_', starting with a letter or a digit. The page checks a name before asking
// the server, so that a person is told why one is refused without a round trip.

export const DEFAULT_ROOM = 'general'; // the server's TRIO_CHAT_DEFAULT_ROOM, by default
export const MAX_ROOM_CHARS = 64;
const ROOM_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const NOT_ALLOWED = /[^a-z0-9_-]/gu;

export function isRoomName(value) {
  return typeof value === 'string' && ROOM_NAME.test(value);
}

/** What a person typed, tidied: surrounding spaces and a leading "#" are not part of a name. */
export function tidyRoomName(raw) {
  return String(raw ?? '').trim().replace(/^#/, '');
}

function quoteEach(chars) {
  return chars.map((ch) => (ch === ' ' ? 'spaces' : `“${ch}”`)).join(', ');
}

/** Why `name` is not a room name, in words for people; '' when it is one. */
export function roomNameProblem(name) {
  if (!name) return 'Type the name of a room.';
  const length = Array.from(name).length;
  if (length > MAX_ROOM_CHARS) {
    return `A room name is at most ${MAX_ROOM_CHARS} characters long (this one has ${length}).`;
  }
  const bad = [...new Set(name.match(NOT_ALLOWED) ?? [])];
  if (bad.length) {
    const lower = name.toLowerCase();
    if (ROOM_NAME.test(lower)) return `Room names are in lower case: try “${lower}”.`;
    return `Not allowed in a room name: ${quoteEach(bad)}. Use a-z, 0-9, “-” and “_”.`;
  }
  if (!ROOM_NAME.test(name)) return 'A room name starts with a letter or a digit.';
  return '';
}

/** The room a location hash ("#name") asks for, or '' when it names none. */
export function roomFromHash(hash) {
  const raw = String(hash ?? '').replace(/^#/, '');
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // a stray "%": shown as typed, and refused as a name
  }
}
