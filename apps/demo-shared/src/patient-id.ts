/**
 * A patient's public id: its recordId, a random UUID (RFC 9562 form), in any letter case. Both
 * demos address patients by it, never by the autoincrement row id, which counts every clinic's
 * patients.
 */
export const PATIENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
