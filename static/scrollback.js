// Asking the server for a room's older messages: an `older` frame, answered by an `older` frame
// with a page of them (oldest first) and whether that is all there is. The reader asks by
// scrolling to the top of a room's log or with its "Load older messages" button; the log says
// what to ask for and shows the answer (message-log.js).
//
// - One request per room at a time, and none once the server said there is nothing older, or
//   while the room is not joined on this connection (its history has not arrived yet).
// - A request goes through the pacer, like anything sent. After a `rate_limited` hold the
//   requests still unanswered go again: a second answer to one request is no harm, since an
//   answer is taken only while its request is out and only if it is older than what is shown.
// - `hub_unavailable` about the room, or no answer within ANSWER_TIMEOUT_MS, ends a request:
//   the button offers to try again. Nothing waits for an answer that cannot come.
// - A request is not resumable state: one out when the connection drops is forgotten, and the
//   reader asks again.
// - A server from before scrollback answers `unknown_type` (and one without rooms cannot be
//   asked about a room): the page asks it nothing more until the next connection.

import { OLDER_NO_ANSWER_TEXT, OLDER_UNAVAILABLE_TEXT, olderLoadedText } from './texts.js';

const OLDER_PAGE = 50; // messages asked for at once (the server gives 100 at most)
const ANSWER_TIMEOUT_MS = 15_000;

export class Scrollback {
  /**
   * `rooms` are the page's rooms, `view` has their logs and speaks to screen readers, `pacer`
   * sends, `limits` are the server's, and `ownName()` is the name our messages were sent under.
   */
  constructor({ rooms, view, pacer, limits, ownName }) {
    Object.assign(this, { rooms, view, pacer, limits, ownName });
    this.pending = new Map(); // MessageLog -> its request out: {room, before, limit, run, timer}
    this.supported = false; // this connection's server can be asked
  }

  /** A connection was welcomed: a server that speaks rooms may know scrollback too. */
  welcome() {
    this.supported = this.limits.speaksRooms;
  }

  /** `room`'s history arrived: the connection is in it, and can page back through it. */
  joined(room) {
    this.view.log(room.name).setOlderAvailable(this.supported);
  }

  /** The connection dropped: its requests are forgotten, and nothing is asked until the next. */
  disconnected() {
    this.stopAsking();
  }

  /** The reader of `log` wants older messages. */
  ask(log) {
    const room = this.rooms.get(log.room);
    if (!this.supported || !room?.joined || this.pending.has(log)) return;
    const asked = log.olderRequest(OLDER_PAGE);
    if (!asked) return;
    const request = { ...asked, room: room.name };
    const noAnswer = () => this.end(log, request, OLDER_NO_ANSWER_TEXT);
    request.timer = setTimeout(noAnswer, ANSWER_TIMEOUT_MS);
    this.pending.set(log, request);
    log.setLoading(true);
    this.send(request);
  }

  // Should the pacer refuse it (too much waits), no answer comes, and the timeout says so.
  send({ room, before, limit }) {
    this.pacer.send({ type: 'older', room, before, limit });
  }

  /** An `older` frame of `room`: `messages` ({id, ts, sender, message}), oldest first. */
  answered(room, messages, complete) {
    const log = this.view.log(room.name);
    const request = this.pending.get(log);
    // Not an answer to the request out: a second one to an earlier request.
    if (!request || messages.some((message) => message.id >= request.before)) return;
    this.settle(log, request);
    const count = log.prependOlder(messages, { request, complete, ownName: this.ownName() });
    const said = olderLoadedText(count, room.name, complete);
    if (said && room === this.rooms.shown) this.view.announce(said);
  }

  /**
   * An error frame with `code`, about room `name` (or null): ends the request it answers, and
   * says whether it did (then it is not the person's to see).
   */
  failed(code, name) {
    if (code === 'unknown_type' && this.pending.size) {
      // Nothing else the page sends is unknown to a server that speaks rooms.
      this.stopAsking();
      return true;
    }
    // An error names no request: with one out for the room, `hub_unavailable` is taken as its
    // answer (a message of that room out at the same moment, failing alone, is rarer still).
    if (code !== 'hub_unavailable' || name === null || !this.rooms.has(name)) return false;
    const log = this.view.log(name);
    const request = this.pending.get(log);
    if (!request) return false;
    this.end(log, request, OLDER_UNAVAILABLE_TEXT);
    return true;
  }

  /** After a `rate_limited` hold: what may have been refused goes again. */
  askAgain() {
    for (const request of this.pending.values()) this.send(request);
  }

  // The request is over without an answer: the reader may try again.
  end(log, request, why) {
    if (this.pending.get(log) !== request) return;
    this.settle(log, request);
    log.olderFailed(why);
    if (log.shown) this.view.announce(why);
  }

  settle(log, request) {
    clearTimeout(request.timer);
    this.pending.delete(log);
    log.setLoading(false);
  }

  stopAsking() {
    this.supported = false;
    for (const [log, request] of this.pending) this.settle(log, request);
    for (const room of this.rooms.list) this.view.log(room.name).setOlderAvailable(false);
  }
}
