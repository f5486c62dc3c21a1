// The lightest CancelSignal: an `aborted` flag and one listener field (an array only in the rare
// case of two listeners at once). Listeners run once, on the first abort(), as with AbortSignal.
import type { AbortListener, CancelSignal } from './types';

type Listener = AbortListener;

export class Cancel implements CancelSignal {
  aborted = false;
  private listeners?: Listener | Listener[];

  addEventListener(_type: 'abort', listener: Listener): void {
    if (this.aborted) return; // like AbortSignal: an aborted signal fires no more events
    const l = this.listeners;
    if (l === undefined) this.listeners = listener;
    else if (!Array.isArray(l)) {
      if (l !== listener) this.listeners = [l, listener];
    } else if (!l.includes(listener)) l.push(listener);
  }

  removeEventListener(_type: 'abort', listener: Listener): void {
    const l = this.listeners;
    if (l === listener) this.listeners = undefined;
    else if (Array.isArray(l)) {
      const i = l.indexOf(listener);
      if (i >= 0) l.splice(i, 1);
      if (l.length === 0) this.listeners = undefined;
    }
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const l = this.listeners;
    this.listeners = undefined;
    if (Array.isArray(l)) for (const fn of l) call(fn);
    else if (l) call(l);
  }
}

function call(l: Listener): void {
  if (typeof l === 'function') l();
  else l.handleEvent();
}
