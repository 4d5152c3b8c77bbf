import { type Clock, DAY_MS } from "../clock.ts";

/** A clock that moves only when told to: rotation and deletion windows without waiting. */
export class ManualClock implements Clock {
  #now: number;

  constructor(start: Date | number = Date.UTC(2026, 0, 1)) {
    this.#now = typeof start === "number" ? start : start.getTime();
  }

  now(): number {
    return this.#now;
  }

  advance(ms: number): void {
    this.#now += ms;
  }

  advanceDays(days: number): void {
    this.#now += days * DAY_MS;
  }

  set(at: Date | number): void {
    this.#now = typeof at === "number" ? at : at.getTime();
  }
}
