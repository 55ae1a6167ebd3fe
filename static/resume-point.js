// Where this page is in one room's conversation: the message ids it has shown there
// (SeenIds) and the run of ids they belong to (the epoch of the history frame), which
// every reconnect sends back so that the server replays what was missed. Ids are one
// sequence for the whole server, so within a room they grow but skip: each room keeps
// its own point.

import { SeenIds } from './seen-ids.js';

export class ResumePoint {
  constructor() {
    this.seen = new SeenIds();
    this.epoch = ''; // '' until a history frame names the server's run of ids
  }

  /** Records a message; returns false if the page has shown it already. */
  accept(id, ts) {
    return this.seen.accept(id, ts);
  }

  /**
   * A history frame names the run of ids its messages and the live ones belong to. Returns
   * whether it is another run than the one shown.
   */
  joinRun(epoch) {
    if (typeof epoch !== 'string') return false;
    const changed = this.epoch !== '' && epoch !== this.epoch;
    this.epoch = epoch;
    return changed;
  }

  /**
   * A notice names the run of ids of a hub that took over. Its ids may repeat ours: forget
   * them, and resume from its run next time. Returns whether it is a new run.
   */
  switchRun(epoch) {
    if (typeof epoch !== 'string' || epoch === this.epoch) return false;
    this.epoch = epoch;
    this.seen.clear();
    return true;
  }

  /**
   * Picks up where a page before a reload left off: after message `since` of run `epoch`.
   * Later ids are new; an id at or below it starts a new run (see SeenIds).
   */
  restore(epoch, since) {
    this.epoch = epoch;
    this.seen.clear();
    this.seen.highest = since;
  }

  /** The server does not know our `since` (its ids started again): forget the ids seen. */
  forgetIds() {
    this.seen.clear();
  }

  /**
   * The id to resume after: the last message seen or, in a room that was empty, the start of
   * the run (0); null before the page has joined, which asks for a fresh join.
   */
  get since() {
    return this.seen.highest ?? (this.epoch ? 0 : null);
  }
}
