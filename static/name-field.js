// The name box, and the display name this tab goes by: trimmed, kept within the
// server's limit, remembered for the next visit, and announced when it changes.

import { loadName, saveName, normalizeName } from './names.js';

export class NameField {
  /**
   * @param {object} parts
   * @param {HTMLInputElement} parts.input the name box
   * @param {HTMLElement} parts.next where Enter in the name box moves the focus
   * @param {{maxSenderChars: number}} parts.limits the server's, read at every check
   * @param {(name: string, previous: string) => void} parts.onRename called once a new name
   *   is ours
   */
  constructor({ input, next, limits, onRename }) {
    this.input = input;
    this.limits = limits;
    this.onRename = onRename;
    this.name = loadName(limits.maxSenderChars);
    input.value = this.name;
    input.maxLength = limits.maxSenderChars;

    input.addEventListener('change', () => this.commit());
    // Enter in the name box confirms the name; it must not send the message.
    input.addEventListener('keydown', (event) => {
      if (event.key !== 'Enter' || event.isComposing) return;
      event.preventDefault();
      this.commit();
      next.focus();
    });
  }

  /** Takes the name in the box as ours (an empty box keeps the previous one); returns it. */
  commit() {
    const typed = normalizeName(this.input.value, this.limits.maxSenderChars);
    this.adopt(typed || this.name);
    return this.name;
  }

  /**
   * Keeps to the limit a welcome frame set: the box takes no more, and a name past it is cut,
   * as a typed one would be. (A name the server refused in the URL then reaches it this way.)
   */
  applyLimit() {
    const { maxSenderChars } = this.limits;
    this.input.maxLength = maxSenderChars;
    const cut = normalizeName(this.name, maxSenderChars);
    if (cut !== this.name) this.adopt(cut);
  }

  adopt(name) {
    this.input.value = name;
    if (name === this.name) return;
    const previous = this.name;
    this.name = name;
    saveName(name);
    this.onRename(name, previous);
  }
}
