// Which rooms the connection is in, on the wire. A connection opens in the first room of the
// list (its URL says which, and where to resume it); once the server has welcomed it, a join
// frame asks for each other room, with where to resume that one. Joins and leaves go through
// the pacer (they count against the rate limit like anything sent).
//
// A join is answered by the room's history, or refused by an error frame that names the room:
// `hub_unavailable` is tried again after JOIN_RETRY_MS; the other refusals take the room off
// the list. After a `rate_limited` answer, what is still unanswered is asked again: a second
// join of a room is harmless (`already_joined`), and so is a second leave (`not_joined`).

import { joinRefusedText } from './texts.js';

const JOIN_RETRY_MS = 5_000;

export class RoomJoins {
  /**
   * `rooms` is the page's Rooms, `pacer` sends, `limits` are the server's. `events`:
   * joined(room) when a join is answered without a history, refused(room, text, code) when the
   * server will not let us in, retrying(room, text) when it will try again.
   */
  constructor({ rooms, pacer, limits, events }) {
    Object.assign(this, { rooms, pacer, limits, events });
    this.connection = 0; // the number of the current connection
    this.welcomed = false;
    this.urlRoom = null; // the room the current connection was opened in
    this.leaving = new Set(); // leaves sent and not answered yet
    this.retries = new Map(); // room name -> timer
  }

  /** The room to open the next connection in (the first joined); remembered as its room. */
  roomForUrl() {
    this.urlRoom = this.rooms.first?.name ?? null;
    return this.rooms.first;
  }

  connectionOpened(number) {
    this.connection = number;
    this.welcomed = false;
    this.cancelRetries();
    this.leaving.clear();
    this.rooms.disconnected();
    const first = this.rooms.get(this.urlRoom);
    if (first) first.joinSentOn = number;
  }

  disconnected() {
    this.welcomed = false;
    this.cancelRetries();
    this.rooms.disconnected();
  }

  /** The server greeted the connection: ask for every other room. */
  welcome() {
    this.welcomed = true;
    for (const room of this.rooms.list) {
      if (room.name !== this.urlRoom) this.join(room);
    }
  }

  get canSend() {
    return this.welcomed && this.limits.speaksRooms;
  }

  /** Asks for `room` (in the list) on this connection, unless it is in or asked already. */
  join(room) {
    if (!this.canSend || room.joined || room.joinSentOn === this.connection) return;
    const frame = { type: 'join', room: room.name };
    const { since } = room;
    if (since !== null) frame.since = since;
    room.joinSentOn = this.connection;
    this.pacer.send(frame);
  }

  /** `room` was taken off the list: out of it on the server too, if it is in or on its way. */
  leave(room) {
    clearTimeout(this.retries.get(room.name));
    this.retries.delete(room.name);
    if (!this.canSend || !(room.joined || room.joinSentOn === this.connection)) return;
    this.leaving.add(room.name);
    this.pacer.send({ type: 'leave', room: room.name });
  }

  historyArrived(room) {
    room.joined = true;
    room.joinSentOn = null;
  }

  left(name) {
    this.leaving.delete(name);
  }

  /**
   * An error frame naming room `name`: handles it if it answers a join or a leave, and says
   * whether it did.
   */
  refused(code, name) {
    const room = this.rooms.get(name);
    // A leave's answer, or about a room we are not in anyway: nothing to tell.
    if (code === 'not_joined' && (!room || this.leaving.has(name))) return true;
    if (!room || room.joined || room.joinSentOn === null) return code === 'already_joined';
    room.joinSentOn = null;
    if (code === 'already_joined') {
      room.joined = true;
      this.events.joined(room);
      return true;
    }
    const text = joinRefusedText(code, name, this.limits);
    if (code === 'hub_unavailable') {
      this.retryLater(room);
      this.events.retrying(room, text);
    } else if (text) {
      this.events.refused(room, text, code);
    } else {
      room.joinSentOn = this.connection; // not about the join: it still waits for its answer
      return false;
    }
    return true;
  }

  retryLater(room) {
    const { connection } = this;
    clearTimeout(this.retries.get(room.name));
    this.retries.set(room.name, setTimeout(() => {
      this.retries.delete(room.name);
      if (this.connection === connection && this.rooms.get(room.name) === room) this.join(room);
    }, JOIN_RETRY_MS));
  }

  /** After a `rate_limited` hold: ask again for what is still unanswered. */
  askAgain() {
    for (const room of this.rooms.list) {
      if (!room.joined && room.joinSentOn === this.connection && room.name !== this.urlRoom) {
        room.joinSentOn = null;
        this.join(room);
      }
    }
    for (const name of this.leaving) this.pacer.send({ type: 'leave', room: name });
  }

  cancelRetries() {
    for (const timer of this.retries.values()) clearTimeout(timer);
    this.retries.clear();
  }
}
