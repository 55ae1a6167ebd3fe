// The message box and Send: a message is checked against the server's limit,
// sent under the name in the name box, and kept by the outbox until it comes back.

import { NOT_CONNECTED_TEXT, messageTooLongText } from './texts.js';

const utf8 = new TextEncoder();

/**
 * Wires the form. `limits` are the server's (read at every send), `nameField` gives the name
 * to send under, `outbox` keeps what was sent, `conn` sends it.
 */
export function bindComposer({ view, limits, nameField, outbox, conn }) {
  const { form, messageInput, sendButton } = view.els;

  function notConnected() {
    view.showError(NOT_CONNECTED_TEXT, 'offline');
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const sender = nameField.commit();
    const text = messageInput.value.trim();
    messageInput.focus();
    if (!text) return; // silently: Enter on an empty box is not an error
    const bytes = utf8.encode(text).length;
    if (bytes > limits.maxMessageBytes) {
      view.showError(messageTooLongText(bytes, limits.maxMessageBytes), 'message_too_long');
      return;
    }
    if (!conn.send({ sender, message: text })) {
      notConnected();
      return;
    }
    view.clearError();
    outbox.sent(text, sender);
    messageInput.value = '';
  });

  // With Send disabled, the browser silently ignores Enter; say why instead.
  messageInput.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.isComposing && sendButton.disabled) {
      event.preventDefault();
      if (messageInput.value.trim()) notConnected();
    }
  });
}
