// The messages a person typed and the server has not yet sent back: nothing typed may be lost.
//
// They go out one at a time, in order: the next one only once the last came back (or was
// refused). So an error frame, which names no message, is about the one out; a message refused
// for going too fast (`rate_limited`) is sent again after the pacer's hold, in its place, and
// the ones after it keep their order. One refused for another reason goes back to the person:
// into the message box if that is empty, else quoted in the error line.
//
// A message out when the connection drops is settled by its room's history on the next one: if
// the history came back as a clean resume (no gap, same run of ids) and it is not in it, it
// never reached the server and is sent again; after a fresh history it may or may not have been
// sent, and it goes back to the person, who knows whether to say it again.
//
// Bounded: at most MAX_QUEUED messages wait; past that the page says so and keeps the text in
// the box.

import { UNSENT_TEXT } from './texts.js';

export const MAX_QUEUED = 50;
// How much of a message given back the error quotes when the box holds something new.
const PREVIEW_CHARS = 40;

function preview(text) {
  const chars = Array.from(text);
  return chars.length > PREVIEW_CHARS ? `${chars.slice(0, PREVIEW_CHARS).join('')}…` : text;
}

export class Outbox {
  /**
   * `box` is the message input that a message is given back to, `view` shows errors, `pacer`
   * sends frames, `isJoined(room)` says whether the current connection is in a room yet, and
   * `onChange(outbox)` is told when what waits changes.
   */
  constructor({ box, view, pacer, isJoined, onChange = () => {} }) {
    Object.assign(this, { box, view, pacer, isJoined, onChange });
    this.connections = 0; // opened so far, to tell which one a message went out on
    this.queue = []; // {room, sender, text, sentOn}; sentOn: the connection, or null if not out
  }

  get size() {
    return this.queue.length;
  }

  /** The message out and not back yet, or null. */
  get out() {
    const head = this.queue[0];
    return head && head.sentOn !== null ? head : null;
  }

  connectionOpened() {
    this.connections += 1;
  }

  /** Queues a message typed for `room`; false when the queue is full. */
  add(room, sender, text) {
    if (this.queue.length >= MAX_QUEUED) return false;
    this.queue.push({ room, sender, text, sentOn: null });
    this.pump();
    this.onChange(this);
    return true;
  }

  /** Sends the next message if none is out and its room is joined on this connection. */
  pump() {
    const head = this.queue[0];
    if (!head || head.sentOn !== null || !this.isJoined(head.room)) return;
    head.sentOn = this.connections;
    this.pacer.send({ type: 'message', room: head.room, sender: head.sender, message: head.text });
  }

  /** A message came in (live, or in a history): if it is the one out, it was sent. */
  cameBack(room, { sender, message }) {
    const { out } = this;
    if (!out || room !== out.room || sender !== out.sender || message !== out.text) return;
    this.queue.shift();
    this.pump();
    this.onChange(this);
  }

  /**
   * The server refused a frame (not for its pace). If a message is out on this connection (and
   * of `room`, when the error names one), it was that: it goes back to the person. Returns
   * whether it did.
   */
  refused(room = null) {
    const { out } = this;
    if (!out || out.sentOn !== this.connections || (room !== null && room !== out.room)) {
      return false;
    }
    this.queue.shift();
    this.giveBack(out);
    this.pump();
    this.onChange(this);
    return true;
  }

  /**
   * The server refused a frame for its pace. The message out may be it: after the pacer's hold,
   * unless it came back meanwhile, it goes out again.
   */
  rateLimited() {
    const suspect = this.out;
    return () => {
      if (suspect && this.queue[0] === suspect && suspect.sentOn === this.connections) {
        suspect.sentOn = null;
        this.pump();
      }
    };
  }

  /**
   * `room`'s history arrived on this connection (after its messages were seen). `clean`: it
   * resumed the room without a gap, so a message out on an earlier connection and not in it
   * was lost.
   */
  settle(room, clean) {
    const { out } = this;
    if (out && out.room === room && out.sentOn < this.connections) {
      if (clean) {
        out.sentOn = null;
      } else {
        this.queue.shift();
        this.giveBack(out, UNSENT_TEXT, 'unsent');
        this.onChange(this);
      }
    }
    this.pump();
  }

  /**
   * Messages were lost on their way to this page (a `messages_missed` notice): the one out may
   * have been among them, or may never have been sent. It goes back to the person.
   */
  unsure() {
    const { out } = this;
    if (!out) return;
    this.queue.shift();
    this.giveBack(out, UNSENT_TEXT, 'unsent');
    this.pump();
    this.onChange(this);
  }

  /**
   * `room` was left, or could not be joined: what waits for it goes back to the person. (One
   * out on this connection went before the leave, and its fate is the server's answer's.)
   */
  dropRoom(room) {
    const ofRoom = this.queue.filter((item) => item.room === room);
    if (!ofRoom.length) return;
    this.queue = this.queue.filter((item) => item.room !== room);
    const unsent = ofRoom.filter((item) => item.sentOn !== this.connections);
    if (unsent.length) {
      const many = unsent.length > 1 ? ` (${unsent.length} messages)` : '';
      this.giveBack(unsent[0], `Not sent${many}: you are not in #${room}.`, 'unsent');
    }
    this.onChange(this);
    this.pump();
  }

  /**
   * Back into the box if that is empty, else quoted. `why`, when given, is said in the error
   * line (otherwise the caller already said why).
   */
  giveBack(item, why = '', code = '') {
    const intoBox = this.box.value === '';
    if (intoBox) this.box.value = item.text;
    if (!why) {
      if (!intoBox) this.view.appendError(` It was: “${preview(item.text)}”`);
      return;
    }
    const where = intoBox ? 'It is back in the box.' : `It was: “${preview(item.text)}”`;
    this.view.showError(`${why} ${where}`, code);
  }
}
