// The message box and Send. Enter sends and Shift+Enter starts a new line; a message is checked
// against the server's limit (counted live, see length-meter.js), sent under the name in the
// name box to the room shown, and queued by the outbox until it comes back.

import { LengthMeter, utf8Length } from './length-meter.js';
import { NOT_CONNECTED_TEXT, messageTooLongText, queueFullText } from './texts.js';

/**
 * Wires the form. `limits` are the server's (read at every check), `nameField` gives the name
 * to send under, `room()` the room to send to, `outbox` keeps what was sent. Returns
 * `{setOnline, refresh}`: Send works only while online, and a new limit re-measures the text.
 */
export function bindComposer({ view, limits, nameField, room, outbox }) {
  const { form, messageInput: box, sendButton } = view.els;
  const meter = new LengthMeter({ counter: view.els.counter, spoken: view.els.lengthStatus, limits });
  let online = false;

  function refresh() {
    const over = meter.update(box.value.trim()) === 'over';
    sendButton.disabled = !online || over;
    sendButton.title = !online ? 'Not connected' : over ? 'The message is too long' : '';
  }

  function send() {
    const sender = nameField.commit();
    const text = box.value.trim();
    box.focus();
    if (!text) return; // silently: Enter on an empty box is not an error
    if (!online) {
      view.showError(NOT_CONNECTED_TEXT, 'offline');
      return;
    }
    const bytes = utf8Length(text);
    if (bytes > limits.maxMessageBytes) {
      view.showError(messageTooLongText(bytes, limits.maxMessageBytes), 'message_too_long');
      return;
    }
    if (!outbox.add(room(), sender, text)) {
      view.showError(queueFullText(outbox.size), 'queue_full');
      return;
    }
    view.clearError();
    box.value = '';
    refresh();
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  // Enter sends (a disabled Send would ignore it silently: send() says why instead);
  // Shift+Enter is left to the textarea, which starts a new line.
  box.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    send();
  });
  box.addEventListener('input', refresh);

  return {
    setOnline(value) {
      online = value;
      refresh();
    },
    refresh,
  };
}
