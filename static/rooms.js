// The rooms this page is in, in the order it joined them, and the one it shows. What the page
// knows of each room lives here: where its conversation is (its own resume point, since message
// ids are one sequence for the whole server and skip within a room), whether this connection is
// in it yet, who is in it, and what arrived while another room was shown.

import { ResumePoint } from './resume-point.js';

// Messages per room kept for the next page load to show at once (saved-rooms.js).
const RECENT_KEPT = 50;

export class Room {
  /** `makeLines(room)` gives the room its presence lines (presence-lines.js). */
  constructor(name, makeLines) {
    this.name = name;
    this.resume = new ResumePoint();
    this.unread = 0; // messages that arrived while another room was shown
    this.joined = false; // this connection is in the room (its history arrived)
    this.joinSentOn = null; // the connection a join went out on, while waiting for its history
    this.clean = true; // this connection's resume of the room has no gap
    this.presence = null; // {online, users, truncated}, or null while unknown
    this.recent = []; // the last messages seen: {id, ts, sender, message}
    // Names we went by before a rename that this room's presence has not reported gone yet:
    // their leave is our rename, which is not news to us.
    this.formerNames = new Set();
    this.lines = makeLines(this);
  }

  /** Remembers a message shown (bounded), for the next page load. */
  keep(message) {
    this.recent.push(message);
    if (this.recent.length > RECENT_KEPT) this.recent.shift();
  }

  /** The `since` of a join frame: "<epoch>:<id>", or null for a fresh join. */
  get since() {
    const { since, epoch } = this.resume;
    if (since === null) return null;
    return epoch ? `${epoch}:${since}` : String(since);
  }
}

export class Rooms {
  /**
   * `onChange()` is told whenever the list, the shown room or a count changes; `makeLines`
   * is for Room.
   */
  constructor({ onChange = () => {}, makeLines }) {
    this.onChange = onChange;
    this.makeLines = makeLines;
    this.list = [];
    this.shown = null;
  }

  get(name) {
    return this.list.find((room) => room.name === name) ?? null;
  }

  has(name) {
    return this.get(name) !== null;
  }

  /** The earliest joined: the one a connection is opened in. */
  get first() {
    return this.list[0] ?? null;
  }

  get names() {
    return this.list.map((room) => room.name);
  }

  get totalUnread() {
    return this.list.reduce((sum, room) => sum + room.unread, 0);
  }

  add(name) {
    const room = this.get(name) ?? new Room(name, this.makeLines);
    if (!this.list.includes(room)) this.list.push(room);
    this.onChange();
    return room;
  }

  /** Takes `name` out; if it was shown, a neighbour is shown instead. Returns the room. */
  remove(name) {
    const index = this.list.findIndex((room) => room.name === name);
    if (index < 0) return null;
    const [room] = this.list.splice(index, 1);
    room.lines.clear();
    if (this.shown === room) this.shown = this.list[Math.min(index, this.list.length - 1)] ?? null;
    this.onChange();
    return room;
  }

  /** Shows `name` (which must be in the list): its unread messages are read. */
  show(name) {
    const room = this.get(name);
    if (!room) return null;
    this.shown = room;
    room.unread = 0;
    this.onChange();
    return room;
  }

  /** `count` messages arrived in `room`: unread unless it is shown. Returns whether it was read. */
  arrived(room, count = 1) {
    if (room === this.shown || count <= 0) return true;
    room.unread += count;
    this.onChange();
    return false;
  }

  /** A connection was lost or opened: no room is joined on it yet. */
  disconnected() {
    for (const room of this.list) {
      room.joined = false;
      room.joinSentOn = null;
      room.clean = true;
      room.presence = null;
      room.lines.reset();
    }
    this.onChange();
  }
}
