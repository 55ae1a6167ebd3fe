// The last message sent and not yet seen back, so that a refusal or a lost
// connection gives it back to the sender rather than losing it silently.

import { UNSENT_TEXT } from './texts.js';

// A rejection only refers to what we just sent; after this long an error is
// about something else and must not resurrect old text into the input.
const PENDING_TTL_MS = 10_000;
// How much of a lost message the error quotes when the box holds something new.
const PREVIEW_CHARS = 40;

export class Outbox {
  /** `box` is the message input that a message is given back to; `view` shows errors. */
  constructor(box, view) {
    this.box = box;
    this.view = view;
    // Connections opened so far, to tell which one the pending message went out on.
    this.connections = 0;
    this.pending = null; // {text, sender, at, connection}
  }

  connectionOpened() {
    this.connections += 1;
  }

  sent(text, sender) {
    this.pending = { text, sender, at: Date.now(), connection: this.connections };
  }

  /** A message came in (live, or in the history of a resume): if it is ours, it was sent. */
  cameBack({ sender, message }) {
    const { pending } = this;
    if (pending && sender === pending.sender && message === pending.text) this.pending = null;
  }

  /** The server refused what we just sent: back into the box, unless stale or the box is in use. */
  giveBack() {
    const { pending } = this;
    if (pending && Date.now() - pending.at < PENDING_TTL_MS && this.box.value === '') {
      this.box.value = pending.text;
    }
    this.pending = null;
  }

  /**
   * After a reconnect's history frame: a message sent on an earlier connection that is not in
   * it (nor came live before the drop) may never have reached the server. Give it back, or say
   * so if the box already holds something new.
   */
  settleLost() {
    const { pending } = this;
    if (!pending || pending.connection === this.connections) return;
    this.pending = null;
    if (this.box.value === '') {
      this.box.value = pending.text;
      this.view.showError(`${UNSENT_TEXT} It is back in the box.`, 'unsent');
    } else {
      this.view.showError(`${UNSENT_TEXT} It was: “${preview(pending.text)}”`, 'unsent');
    }
  }
}

function preview(text) {
  const chars = Array.from(text);
  return chars.length > PREVIEW_CHARS ? `${chars.slice(0, PREVIEW_CHARS).join('')}…` : text;
}
