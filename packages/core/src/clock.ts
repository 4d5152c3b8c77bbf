import { KmsInternalError } from "./errors.ts";

/** Source of time for rotation schedules and deletion windows; injectable for tests. */
export interface Clock {
  /** Milliseconds since the Unix epoch: a finite number within the range of a `Date`. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export const DAY_MS = 86_400_000;

/** The furthest a `Date` reaches from the epoch either way (ECMA-262 §21.4.1.22). */
const MAX_DATE_MS = 8.64e15;

/**
 * `clock` with every reading checked: a user's clock answering NaN, Infinity, a string or a time
 * no `Date` can hold would otherwise reach the audit event's `toISOString` (a raw RangeError out
 * of a call whose work may be done) or be stored as a creation or deletion date.
 * @throws KmsInternalError from `now()` for such a reading, or when the clock throws.
 */
export function checkedClock(clock: Clock): Clock {
  // Date.now() answers nothing else: no check per reading.
  if (clock === systemClock) return clock;
  return { now: () => checkedReading(clock) };
}

function checkedReading(clock: Clock): number {
  let reading: unknown;
  try {
    reading = clock.now();
  } catch (cause) {
    throw new KmsInternalError(`the Kms clock (KmsOptions.clock) failed to tell the time`, {
      cause,
    });
  }
  if (typeof reading === "number" && Number.isFinite(reading) && Math.abs(reading) <= MAX_DATE_MS) {
    return reading;
  }
  const shown = typeof reading === "number" ? String(reading) : `a value of type ${typeof reading}`;
  throw new KmsInternalError(
    `the Kms clock (KmsOptions.clock) returned ${shown} from now(): expected milliseconds since the Unix epoch, a finite number within ±${MAX_DATE_MS}`,
  );
}
