// Turns the server's frames (docs/protocol.md) into what the page shows and
// remembers. Frames of types the page does not know are ignored on purpose.

import { updateLimits } from './limits.js';
import { readPresence, describeChange } from './presence.js';
import { INVALID_RESUME_TEXT, errorFallback, noticeText } from './texts.js';

function str(value, fallback = '') {
  return typeof value === 'string' ? value : fallback;
}

/**
 * Returns `handleFrame(frame)`. What it reads and changes comes in `parts`: the `view`, the
 * server's `limits`, the `nameField`, the `outbox` of the message in flight, and the `resume`
 * point (ids seen, run of ids).
 */
export function createFrameHandler({ view, limits, nameField, outbox, resume }) {
  // A message frame (live or from a history frame) in the shape the view
  // wants, or null if it is not a message or was shown already.
  function acceptMessage(frame) {
    if (!frame || typeof frame !== 'object') return null;
    if (frame.type !== undefined && frame.type !== 'message') return null;
    const id = Number.isSafeInteger(frame.id) ? frame.id : null;
    const ts = Number.isFinite(frame.ts) ? frame.ts : null;
    if (id !== null && !resume.accept(id, ts)) return null;
    return { id, ts, sender: str(frame.sender, '?'), message: str(frame.message) };
  }

  function render(message, history) {
    const own = message.sender === nameField.name;
    outbox.cameBack(message);
    view.addMessage(message, { own, history });
  }

  function announcePresence({ users, truncated, joined, left }) {
    const { name, formerNames } = nameField;
    const newcomers = joined.filter((who) => who !== name);
    const leavers = left.filter((who) => !formerNames.has(who));
    // A frame that lists our current name has our rename in it: a leave of an old name that
    // did not come with it never will (another tab holds that name), and any later one is
    // someone else's, who took the name, so stop hiding them.
    if (!truncated && users.includes(name)) formerNames.clear();
    for (const line of [describeChange(newcomers, 'joined'), describeChange(leavers, 'left')]) {
      if (line) view.addSystem(line, 'presence');
    }
  }

  const handlers = {
    welcome(frame) {
      updateLimits(limits, frame);
      nameField.applyLimit();
      const { worker } = frame;
      if (Number.isSafeInteger(worker)) view.setWorker(worker);
      view.addSystem(Number.isSafeInteger(worker)
        ? `Connected (worker ${worker})` : 'Connected', 'welcome');
    },
    history(frame) {
      resume.joinRun(frame.epoch);
      const resumed = frame.resumed === true;
      view.markHistory(resumed ? 'resumed' : 'fresh');
      const entries = Array.isArray(frame.messages) ? frame.messages : [];
      const unseen = entries.map(acceptMessage).filter(Boolean);
      if (unseen.length) {
        view.batch(() => {
          view.addSystem(resumed ? 'While you were away' : 'Earlier messages', 'history');
          for (const message of unseen) render(message, true);
        });
      }
      // Live messages follow the history with no gap: if ours is not in it, it is lost.
      outbox.settleLost();
    },
    message(frame) {
      const message = acceptMessage(frame);
      if (message) render(message, false);
    },
    error(frame) {
      const code = str(frame.code);
      if (code === 'invalid_resume') {
        // Our `since` means nothing to this server: its ids started again
        // (a restart). Forget ours so that its history renders in full.
        resume.forgetIds();
        view.addSystem(INVALID_RESUME_TEXT, 'notice', code);
        return;
      }
      view.showError(str(frame.message) || errorFallback(code, limits), code);
      outbox.giveBack();
    },
    notice(frame) {
      const code = str(frame.code);
      if (code === 'messages_missed') resume.switchRun(frame.epoch);
      view.addSystem(noticeText(code) || str(frame.message) || code || 'notice', 'notice', code);
    },
    presence(frame) {
      const presence = readPresence(frame);
      view.setPresence(presence.online, presence.users, nameField.name, presence.truncated);
      announcePresence(presence);
    },
  };

  return function handleFrame(frame) {
    if (Object.hasOwn(handlers, frame.type)) handlers[frame.type](frame);
  };
}
