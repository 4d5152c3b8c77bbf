/**
 * The error bodies the README documents, as clients receive them: RFC 9457 problem+json, the
 * demo's own failures under `demo/`, KMS errors as @kms/express's kmsErrorHandler answers them
 * (`kms/<code>`), but for the 410 of a clinic whose key is gone.
 */
export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code?: string;
}

const BASE = "https://kms.dev/problems/";

/** A patient's public id: its random recordId, never the autoincrement row id. */
export const PATIENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export const UNAUTHENTICATED: Problem = {
  type: `${BASE}demo/unauthenticated`,
  title: "Unauthenticated",
  status: 401,
  detail: "authorization: send Authorization: Bearer <your clinic's token>",
};

export const NOT_IN_CLINIC: Problem = {
  type: `${BASE}demo/not-found`,
  title: "Not found",
  status: 404,
  detail: "no such patient in this clinic",
};

/** Any stored value that does not decrypt in the clinic's context, or an SSN not its row's. */
export const UNDECRYPTABLE: Problem = {
  type: `${BASE}kms/InvalidCiphertextException`,
  title: "InvalidCiphertextException",
  status: 403,
  detail:
    "the ciphertext cannot be decrypted in this request's encryption context " +
    "(it belongs to another tenant or context, or it was altered)",
  code: "InvalidCiphertextException",
};

/** The clinic's KMS key is pending deletion. */
export const SHREDDED: Problem = {
  type: `${BASE}kms/KMSInvalidStateException`,
  title: "KMSInvalidStateException",
  status: 410,
  detail:
    "a key this request needs is not in a state that allows this operation (for example, pending deletion)",
  code: "KMSInvalidStateException",
};

/** A KMS fault (an unreachable KMS server, a refused signature): opaque, logged. */
export const KMS_FAULT: Problem = {
  type: `${BASE}kms/internal`,
  title: "Key management failure",
  status: 500,
  detail: "the key management service failed; see the server logs",
};
