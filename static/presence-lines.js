// The lines a room's log shows about people coming and going, kept few enough not to drown the
// conversation. Presence frames report every change, and three kinds of change are not news:
//
// - A rename: the server reports it as a leave and a join. One name out, one in, and the same
//   number of tabs online reads as "ann is now bob". (Our own rename is known without guessing:
//   the page says it when it happens, and leaves our names out here.)
// - A quick reconnect (a reload, a network blip): a leave, then the same name back. Leaves are
//   held for LEFT_HOLD_MS and dropped if the name comes back meanwhile.
// - Anything in a busy room: above QUIET_ABOVE people online, the count says enough.

import { describeChange } from './presence.js';

export const LEFT_HOLD_MS = 5_000;
export const QUIET_ABOVE = 20;

export class PresenceLines {
  /**
   * `emit(text)` adds a line to the room's log; `timers` (setTimeout, clearTimeout) can be
   * stood in for.
   */
  constructor(emit, { holdMs = LEFT_HOLD_MS, timers = globalThis } = {}) {
    this.emit = emit;
    this.holdMs = holdMs;
    this.timers = timers;
    this.online = null; // the count of the previous frame, null before the first one
    this.present = null; // the names online (a Set), null when not known in full
    this.held = new Map(); // name -> the timer that will say it left
  }

  /**
   * A presence frame (as readPresence gives it) for this room. `ownName` is our name now,
   * `formerNames` the names we went by before: neither is news.
   */
  update({ online, users, truncated, joined, left }, { ownName, formerNames }) {
    const previousOnline = this.online;
    this.online = online;
    this.present = truncated ? null : new Set(users);
    const comers = joined.filter((who) => who !== ownName);
    const goers = left.filter((who) => who !== ownName && !formerNames.has(who));
    // Back before their leave was said: nothing happened, as far as anyone reading can tell.
    const arrivals = comers.filter((who) => !this.cancel(who));
    if (online > QUIET_ABOVE) return;
    if (arrivals.length === 1 && goers.length === 1 && online === previousOnline) {
      this.cancel(goers[0]);
      this.emit(`${goers[0]} is now ${arrivals[0]}`);
      return;
    }
    const line = describeChange(arrivals, 'joined');
    if (line) this.emit(line);
    this.hold(goers);
  }

  /** The connection dropped: the next presence frame starts the story again. */
  reset() {
    this.online = null;
  }

  /** The room was left: nothing more is said in it. */
  clear() {
    for (const timer of this.held.values()) this.timers.clearTimeout(timer);
    this.held.clear();
  }

  hold(names) {
    if (!names.length) return;
    const timer = this.timers.setTimeout(() => this.sayLeft(names, timer), this.holdMs);
    for (const name of names) this.held.set(name, timer);
  }

  // Said once for the names of one frame that are still gone (and not by the time the room
  // grew busy, or when presence is unknown: a stale leave is worse than none).
  sayLeft(names, timer) {
    const gone = names.filter((name) => this.held.get(name) === timer);
    for (const name of gone) this.held.delete(name);
    const stillGone = gone.filter((name) => this.present !== null && !this.present.has(name));
    if (this.online === null || this.online > QUIET_ABOVE) return;
    const line = describeChange(stillGone, 'left');
    if (line) this.emit(line);
  }

  cancel(name) {
    const timer = this.held.get(name);
    if (timer === undefined) return false;
    this.held.delete(name);
    // Other names held by the same timer still wait for it.
    if (![...this.held.values()].includes(timer)) this.timers.clearTimeout(timer);
    return true;
  }
}
