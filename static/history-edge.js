// The top of a room's scrollback, inside its log: the button that loads older messages, or the
// quiet line that says why there are none. It sits just above the oldest message of the run of
// ids the log is in (message-log.js), which is where older messages go. Its `data-state`, for
// styles and tests:
//
//   idle      hidden: nothing to page back from yet (no message, not in the room on this
//             connection, or a server that cannot page back)
//   ready     "Load older messages" (scrolling to the top of the log does the same)
//   loading   the same button, aria-disabled and saying so: one request at a time
//   failed    the button again, described by why the last attempt failed: pressing it retries
//   complete  "Beginning of the conversation": the server keeps nothing older
//   full      the log holds as many entries as a room may keep: nothing older is loaded
//
// The state is worked out from what is known (the fields below) rather than set, so that no
// order of events can leave it spinning or offering what cannot be had.

import { el } from './dom.js';
import { BEGINNING_TEXT, LOADING_OLDER_TEXT, LOAD_OLDER_TEXT, olderNotKeptText } from './texts.js';

export class HistoryEdge {
  /**
   * `room` names the log, which keeps at most `maxEntries`; `onAsk()` is told when the button
   * is pressed while asking makes sense.
   */
  constructor(doc, { room, maxEntries, onAsk }) {
    const edge = el(doc, 'div', 'log-edge');
    const button = el(doc, 'button', 'older-button', LOAD_OLDER_TEXT);
    button.type = 'button';
    const note = el(doc, 'p', 'edge-note');
    note.id = `older-note-${room}`;
    button.setAttribute('aria-describedby', note.id);
    button.addEventListener('click', () => {
      if (this.askable) onAsk();
    });
    edge.append(button, note);
    Object.assign(this, { element: edge, button, note, maxEntries });

    this.available = false; // this connection is in the room, on a server that pages back
    this.loading = false; // a request is out
    this.failure = ''; // why the last request failed, until the next one
    this.complete = false; // the server said nothing is older
    this.full = false; // the log has no room for older entries
    this.state = ''; // none yet: the first render writes it
    this.render(false);
  }

  /** Whether asking for older messages makes sense now. */
  get askable() {
    return this.state === 'ready' || this.state === 'failed';
  }

  /** A new run of ids starts below the edge: nothing is known about what is older. */
  reset() {
    Object.assign(this, { failure: '', complete: false, full: false });
  }

  /** Shows what is known; `hasMessages`: the run below has a message to page back from. */
  render(hasMessages) {
    const state = this.complete ? 'complete'
      : this.full ? 'full'
        : !this.available || !hasMessages ? 'idle'
          : this.loading ? 'loading'
            : this.failure ? 'failed' : 'ready';
    const notes = {
      failed: this.failure,
      complete: BEGINNING_TEXT,
      full: olderNotKeptText(this.maxEntries),
    };
    const noteText = notes[state] ?? '';
    // Only a change is written: this runs for every entry added, and the log is a live region,
    // where a text written again would be read out again.
    if (state === this.state && noteText === this.note.textContent) return;
    const { element, button, note } = this;
    const offered = ['ready', 'loading', 'failed'].includes(state);
    if (!offered && button.ownerDocument.activeElement === button) {
      // The button goes: the focus stays in the log rather than falling back to the page.
      element.parentElement?.focus({ preventScroll: true });
    }
    this.state = state;
    element.dataset.state = state;
    element.hidden = state === 'idle';
    button.hidden = !offered;
    setText(button, state === 'loading' ? LOADING_OLDER_TEXT : LOAD_OLDER_TEXT);
    if (state === 'loading') button.setAttribute('aria-disabled', 'true');
    else button.removeAttribute('aria-disabled');
    setText(note, noteText);
  }
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
