// Entry point: builds the page's parts and wires them to one connection.
//
// What the page remembers lives in a few small objects, each owned by the part
// that changes it:
//   limits     the server's limits (limits.js), set by each welcome frame
//   nameField  our display name and the names we went by before (name-field.js)
//   outbox     the message in flight, and how many connections opened (outbox.js)
//   resume     the message ids seen and their run of ids (resume-point.js)
//   status     the countdown to the next attempt (status-display.js)

import { ChatConnection, chatUrl } from './chat-connection.js';
import { bindComposer } from './composer.js';
import { createFrameHandler } from './frame-handlers.js';
import { DEFAULT_LIMITS } from './limits.js';
import { NameField } from './name-field.js';
import { Outbox } from './outbox.js';
import { ResumePoint } from './resume-point.js';
import { StatusDisplay } from './status-display.js';
import { createView } from './view.js';

function main() {
  const view = createView(document);
  const { els } = view;
  const limits = { ...DEFAULT_LIMITS };
  const resume = new ResumePoint();
  const outbox = new Outbox(els.messageInput, view);
  const status = new StatusDisplay(view);
  const nameField = new NameField({
    input: els.nameInput,
    next: els.messageInput,
    limits,
    onRename(name) {
      view.restyleOwn(name);
      // Others see the new name at once, not only with our next message. (Offline, the next
      // connection carries it in its URL.)
      conn.send({ type: 'rename', name });
    },
  });

  function onState(state, info) {
    status.show(state, info);
    if (state === 'online') outbox.connectionOpened();
    // 1009 means the server refused what we just sent: give it back. Otherwise a message in
    // flight is kept: the next history frame tells whether it arrived.
    if (state === 'offline' && info.wasOpen && info.code === 1009) outbox.giveBack();
  }

  // Every attempt asks under the current name and, once we have joined, for what came after
  // the last message seen (a resume).
  const conn = new ChatConnection(
    () => chatUrl({ name: nameField.name, since: resume.since, epoch: resume.epoch }),
    { onState, onFrame: createFrameHandler({ view, limits, nameField, outbox, resume }) },
  );

  bindComposer({ view, limits, nameField, outbox, conn });
  els.retryButton.addEventListener('click', () => conn.retryNow());
  // The OS telling us the network is back is a good moment to skip the wait.
  window.addEventListener('online', () => conn.retryNow());

  conn.start();
  document.documentElement.dataset.ready = '1';
}

main();
