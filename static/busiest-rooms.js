// The busiest rooms on the server (GET /rooms: busiest first, at most 100), fetched when the
// room list comes into view, at each welcome, a moment after we join or leave a room (so that
// the list counts us), and every REFRESH_MS while it stays in view. Requests are coalesced: one
// at a time, at most one every MIN_GAP_MS, each given up after FETCH_TIMEOUT_MS. At most
// MAX_SHOWN rooms are kept.

const REFRESH_MS = 30_000;
const MIN_GAP_MS = 2_000;
const FETCH_TIMEOUT_MS = 10_000;
const MAX_SHOWN = 20;
const UNAVAILABLE_TEXT = 'The list of rooms is not available right now.';

/** The rooms of a GET /rooms answer that check out ({room, online}), busiest first. */
export function readRoomList(document, isRoomName) {
  const rooms = Array.isArray(document?.rooms) ? document.rooms : [];
  return rooms
    .filter((entry) => isRoomName(entry?.room) && Number.isSafeInteger(entry.online) && entry.online >= 0)
    .slice(0, MAX_SHOWN)
    .map(({ room, online }) => ({ room, online }));
}

export class BusiestRooms {
  /**
   * `isRoomName` checks names; `show(rooms)` gets each list; `unavailable(text)` is told when
   * one cannot be had; `inView()` says whether the list is on screen.
   */
  constructor({ isRoomName, show, unavailable, inView }) {
    Object.assign(this, { isRoomName, show, unavailable, inView });
    this.timer = null; // the next fetch, when one is due
    this.fetching = false;
    this.lastAt = -Infinity; // when the last fetch started
  }

  start() {
    setInterval(() => {
      if (this.inView() && document.visibilityState === 'visible') this.refresh();
    }, REFRESH_MS);
  }

  /** Fetches the list again, in `delayMs` at the soonest (coalesced with one already due). */
  refresh(delayMs = 0) {
    if (this.timer !== null) return;
    const wait = Math.max(delayMs, this.lastAt + MIN_GAP_MS - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.fetchNow();
    }, wait);
  }

  async fetchNow() {
    if (this.fetching) return;
    this.fetching = true;
    this.lastAt = performance.now();
    try {
      const response = await fetch('/rooms', {
        headers: { accept: 'application/json' },
        cache: 'no-store',
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`GET /rooms: ${response.status}`);
      this.show(readRoomList(await response.json(), this.isRoomName));
    } catch {
      // A server without the list, or one that cannot reach its hub (503): say so, keep going.
      this.unavailable(UNAVAILABLE_TEXT);
    } finally {
      this.fetching = false;
    }
  }
}
