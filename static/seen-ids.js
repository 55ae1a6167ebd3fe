// Which message ids this page has shown, so that history, resumed and live
// copies of one message render once, and so a reconnect can say where we
// left off (`since`).
//
// Ids are the hub's sequence numbers, which start again at 1 when the hub
// restarts. Within one run of the hub a page only ever gets growing ids: a
// history is oldest first, live messages follow it, and a resume starts after
// `since`. So an id at or below the highest one seen is either a repeat of a
// message already shown (same id, same ts) or the first of a new run of ids,
// and then the old ones mean nothing any more.

const MAX_REMEMBERED = 5000; // the view keeps at most ~1000 entries anyway

export class SeenIds {
  constructor() {
    this.tsById = new Map();
    this.highest = null; // highest id of the current run of ids, or null
  }

  /** Records a message; returns false if it was shown already. */
  accept(id, ts) {
    if (this.tsById.has(id) && this.tsById.get(id) === ts) return false;
    if (this.highest !== null && id <= this.highest) this.clear();
    this.tsById.set(id, ts);
    if (this.tsById.size > MAX_REMEMBERED) this.tsById.delete(this.tsById.keys().next().value);
    this.highest = this.highest === null ? id : Math.max(this.highest, id);
    return true;
  }

  /** Forgets everything: the server's ids no longer mean what they meant. */
  clear() {
    this.tsById.clear();
    this.highest = null;
  }
}
