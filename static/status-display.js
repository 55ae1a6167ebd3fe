// The connection's state in the header, a countdown to the next attempt while
// offline, and a line in the rooms' logs for each connection lost.

import { CLOSE_REASONS } from './texts.js';

const SECOND_MS = 1000;

export class StatusDisplay {
  constructor(view) {
    this.view = view;
    this.countdown = null; // the interval that redraws "retrying in N s"
  }

  /** Shows a state reported by ChatConnection (its `onState` arguments). */
  show(state, info) {
    const { view } = this;
    clearInterval(this.countdown);
    if (state === 'connecting') {
      view.setStatus('connecting', 'connecting…');
    } else if (state === 'online') {
      view.setStatus('online', 'online');
      // A stale "not connected" hint would be confusing once we're back.
      if (view.els.error.dataset.code === 'offline') view.clearError();
    } else {
      view.setStatus('offline', 'disconnected');
      this.startCountdown(info.retryInMs);
      if (info.wasOpen) {
        const why = CLOSE_REASONS[info.code] || 'connection closed';
        const reason = info.reason ? `: ${info.reason}` : '';
        view.addToEveryLog(`Disconnected — ${why} (${info.code})${reason}`, 'disconnect');
      }
    }
  }

  // Counted down every second so that the state never looks stuck.
  startCountdown(retryInMs) {
    const deadline = Date.now() + retryInMs;
    const tick = () => {
      const secs = Math.max(1, Math.ceil((deadline - Date.now()) / SECOND_MS));
      this.view.setStatusDetail(`— retrying in ${secs} s`);
    };
    tick();
    this.countdown = setInterval(tick, SECOND_MS);
  }
}
