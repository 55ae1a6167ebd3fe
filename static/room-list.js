// The room panel: the rooms joined (each a button, with its unread count, and a Leave button),
// a form to join or create a room by name, and the busiest rooms on the server. At narrow
// widths (phones) it folds away behind the Rooms button in the header.
//
// Keyboard: every room is a button (Enter and Space work), the shown one is aria-current, and a
// count is part of its name ("#dev, 3 unread") so that it is read out with the room. Lists are
// updated in place, never rebuilt under the focus.

import { el } from './dom.js';
import { roomNameProblem, tidyRoomName } from './room-names.js';

const NARROW = '(max-width: 720px)'; // style.css folds the panel at the same width

// Shows `count` on `button` as a badge, and says it in the button's name ("#dev, 3 unread"),
// so that it is read out with the room.
function showUnread(doc, button, label, count) {
  if (button.dataset.unread === String(count)) return;
  button.dataset.unread = String(count);
  let badge = button.querySelector('.unread-badge');
  if (!badge) {
    badge = el(doc, 'span', 'unread-badge');
    badge.setAttribute('aria-hidden', 'true');
    button.append(badge);
  }
  badge.textContent = count ? String(count) : '';
  badge.hidden = !count;
  button.setAttribute('aria-label', count ? `${label}, ${count} unread` : label);
}

export class RoomList {
  /**
   * `actions`: show(name), leave(name), join(name) (returns why it cannot, or ''), and
   * opened() (the list came into view: time to refresh the busiest rooms).
   */
  constructor(doc, actions) {
    const byId = (id) => doc.getElementById(id);
    this.doc = doc;
    this.actions = actions;
    this.panel = byId('room-panel');
    this.toggle = byId('rooms-toggle');
    this.joined = byId('joined-rooms');
    this.busiest = byId('busiest-rooms');
    this.busiestStatus = byId('busiest-status');
    this.joinForm = byId('join-form');
    this.joinInput = byId('join-input');
    this.joinHint = byId('join-hint');
    this.narrow = doc.defaultView.matchMedia(NARROW);
    this.wire();
  }

  get isOpen() {
    return !this.narrow.matches || this.panel.classList.contains('open');
  }

  wire() {
    this.toggle.addEventListener('click', () => this.setOpen(!this.panel.classList.contains('open')));
    this.panel.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.narrow.matches) {
        this.setOpen(false);
        this.toggle.focus();
      }
    });
    // On a phone, a tap on the conversation it covers puts the list away.
    this.doc.querySelector('.conversation').addEventListener('click', () => {
      if (this.narrow.matches && this.panel.classList.contains('open')) this.setOpen(false);
    });
    for (const list of [this.joined, this.busiest]) {
      list.addEventListener('click', (event) => this.clicked(event.target.closest('button')));
    }
    this.joinForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submitJoin();
    });
    this.joinInput.addEventListener('input', () => {
      const typed = tidyRoomName(this.joinInput.value);
      this.hint(typed ? roomNameProblem(typed) : '');
    });
  }

  clicked(button) {
    if (!button || !button.dataset.room) return;
    const { room } = button.dataset;
    if (button.classList.contains('leave-button')) {
      this.actions.leave(room);
      // The button went with its room: the focus goes to the room shown now.
      this.joined.querySelector('[aria-current="true"]')?.focus();
      return;
    }
    this.actions.join(room); // shows it when joined already
    this.chosen();
  }

  submitJoin() {
    const name = tidyRoomName(this.joinInput.value);
    const problem = roomNameProblem(name) || this.actions.join(name);
    this.hint(problem);
    if (problem) {
      this.joinInput.focus();
      return;
    }
    this.joinInput.value = '';
    this.chosen();
  }

  hint(text) {
    this.joinHint.textContent = text;
    if (text) this.joinInput.setAttribute('aria-invalid', 'true');
    else this.joinInput.removeAttribute('aria-invalid');
  }

  // On a phone the list covers the conversation: a room chosen, it gives way to it.
  chosen() {
    if (!this.narrow.matches || !this.panel.classList.contains('open')) return;
    this.setOpen(false);
    this.doc.getElementById('message-input').focus();
  }

  setOpen(open) {
    this.panel.classList.toggle('open', open);
    this.toggle.setAttribute('aria-expanded', String(open));
    if (!open) return;
    this.actions.opened();
    (this.joined.querySelector('[aria-current="true"]') ?? this.joinInput).focus();
  }

  /** Shows the rooms joined (a Rooms), the shown one marked, each with its unread count. */
  render(rooms) {
    const { doc } = this;
    const items = new Map([...this.joined.children].map((item) => [item.dataset.room, item]));
    for (const [name, item] of items) if (!rooms.has(name)) item.remove();
    for (const room of rooms.list) {
      let item = items.get(room.name);
      if (!item) {
        item = this.joinedItem(room.name);
        this.joined.append(item);
      }
      const button = item.firstElementChild;
      if (room === rooms.shown) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
      showUnread(doc, button, `#${room.name}`, room.unread);
      // The page stays in at least one room: the last one cannot be left.
      item.lastElementChild.hidden = rooms.list.length < 2;
    }
    showUnread(doc, this.toggle, 'Rooms', rooms.totalUnread);
  }

  joinedItem(name) {
    const { doc } = this;
    const item = el(doc, 'li', 'room-item');
    item.dataset.room = name;
    const show = el(doc, 'button', 'room-button');
    Object.assign(show, { type: 'button' });
    show.dataset.room = name;
    show.append(el(doc, 'span', 'room-name', `#${name}`));
    const leave = el(doc, 'button', 'leave-button', '×');
    leave.type = 'button';
    leave.dataset.room = name;
    leave.title = `Leave #${name}`;
    leave.setAttribute('aria-label', `Leave #${name}`);
    item.append(show, leave);
    return item;
  }

  /** The busiest rooms ({room, online}, busiest first); `joined` names those we are in. */
  showBusiest(rooms, joined) {
    const { doc } = this;
    const existing = new Map([...this.busiest.children].map((item) => [item.dataset.room, item]));
    const items = rooms.map(({ room, online }) => {
      const item = existing.get(room) ?? this.busyItem(room);
      const button = item.firstElementChild;
      button.replaceChildren(el(doc, 'span', 'room-name', `#${room}`), el(doc, 'span', 'room-online', `${online} online`));
      button.setAttribute('aria-label', `#${room}, ${online} online${joined.has(room) ? ', joined' : ''}`);
      button.classList.toggle('joined', joined.has(room));
      return item;
    });
    for (const item of existing.values()) if (!items.includes(item)) item.remove();
    // The others are put in order around the item holding the focus, which never moves (a
    // moved element loses the focus).
    const focused = items.find((item) => item.contains(doc.activeElement));
    const pivot = focused ? items.indexOf(focused) : items.length;
    for (const item of items.slice(0, pivot)) this.busiest.insertBefore(item, focused ?? null);
    let previous = focused;
    for (const item of items.slice(pivot + 1)) {
      previous.after(item);
      previous = item;
    }
    this.busiestStatus.textContent = rooms.length ? '' : 'No rooms yet.';
  }

  busyItem(room) {
    const item = el(this.doc, 'li', 'room-item');
    item.dataset.room = room;
    const button = el(this.doc, 'button', 'room-button');
    button.type = 'button';
    button.dataset.room = room;
    item.append(button);
    return item;
  }

  busiestUnavailable(text) {
    this.busiestStatus.textContent = text;
  }
}
