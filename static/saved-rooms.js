// What a reload or a later visit picks up again.
//
// - The rooms joined and the one shown, in localStorage: a later visit, in any tab, rejoins them.
// - Per room, its run of ids and its last messages, in sessionStorage: a reload of this tab
//   shows them at once and resumes each room after them (`since`), instead of starting over.
//   It is per tab on purpose: another tab has seen other messages, and must not resume after
//   what it never showed. Saved as the page goes away (pagehide), not at every message.
//
// Storage can throw (disabled, private mode quotas) or hold anything: never let that break the
// chat, and take only what checks out.

import { isRoomName } from './room-names.js';

const ROOMS_KEY = 'trio_chat.rooms';
const SESSION_KEY = 'trio_chat.session';
const MAX_SAVED_ROOMS = 32; // the server's default max_rooms
// A reload's snapshot stays well under the ~5 MB browsers give an origin.
const MAX_SNAPSHOT_CHARS = 1_500_000;

function read(storage, key) {
  try {
    return JSON.parse(storage.getItem(key) ?? 'null');
  } catch {
    return null;
  }
}

function write(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

/** The rooms to join, in order, and the one to show: `{names, shown}` (names may be empty). */
export function loadRooms() {
  const saved = read(localStorage, ROOMS_KEY);
  const names = Array.isArray(saved?.rooms) ? saved.rooms.filter(isRoomName) : [];
  const unique = [...new Set(names)].slice(0, MAX_SAVED_ROOMS);
  const shown = unique.includes(saved?.shown) ? saved.shown : unique[0] ?? null;
  return { names: unique, shown };
}

export function saveRooms(names, shown) {
  write(localStorage, ROOMS_KEY, { rooms: names, shown });
}

function validMessage(m) {
  return m && Number.isSafeInteger(m.id) && Number.isFinite(m.ts)
    && typeof m.sender === 'string' && typeof m.message === 'string';
}

/** What this tab had of each room before a reload: name -> {epoch, since, messages}. */
export function loadSnapshot() {
  const saved = read(sessionStorage, SESSION_KEY);
  const snapshot = new Map();
  if (!saved || typeof saved !== 'object') return snapshot;
  for (const [name, room] of Object.entries(saved)) {
    const fits = typeof room?.epoch === 'string' && Number.isSafeInteger(room.since)
      && room.since >= 0 && Array.isArray(room.messages);
    if (!isRoomName(name) || !fits) continue;
    snapshot.set(name, {
      epoch: room.epoch, since: room.since, messages: room.messages.filter(validMessage),
    });
  }
  return snapshot;
}

/**
 * Saves each joined room's run of ids and last messages. Too big, and the oldest messages go
 * first; if even that fails, nothing is kept (a reload then joins afresh: nothing is lost).
 */
export function saveSnapshot(rooms) {
  for (let keep = Infinity; keep >= 1; keep = keep === Infinity ? 25 : Math.floor(keep / 2)) {
    const snapshot = {};
    for (const room of rooms) {
      const { epoch, since } = room.resume;
      if (since === null) continue; // never joined: nothing to resume
      snapshot[room.name] = { epoch, since, messages: room.recent.slice(-keep) };
    }
    const text = JSON.stringify(snapshot);
    if (text.length <= MAX_SNAPSHOT_CHARS && write(sessionStorage, SESSION_KEY, snapshot)) return;
  }
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch { /* storage unavailable */ }
}
