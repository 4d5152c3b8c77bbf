/**
 * Values the operations apply when a request omits a field that a condition key reads. The key
 * policy judges the value the call will apply, so omitting the field cannot step around a Deny
 * on its default; both sides read it from here so that they cannot drift apart.
 */

/** EnableKeyRotation's `rotationPeriodInDays` when omitted (kms:RotationPeriodInDays). */
export const DEFAULT_ROTATION_PERIOD_IN_DAYS = 365;

/**
 * ScheduleKeyDeletion's `pendingWindowInDays` when omitted
 * (kms:ScheduleKeyDeletionPendingWindowInDays).
 */
export const DEFAULT_PENDING_WINDOW_IN_DAYS = 30;
