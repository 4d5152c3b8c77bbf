import { ValidationError } from "@kms/core";
import {
  type ComponentSpec,
  computeContentDigest,
  type DigestAlgorithm,
  fieldLines,
  type SignOptions,
  signMessage,
} from "@kms/http-signatures";
import type { RequestHandler } from "express";
import { rawBodyOf } from "./raw-body.ts";
import { requestMessage } from "./request-message.ts";
import { verifiedSignatureOf } from "./verify-signature.ts";

export interface SignResponseOptions extends Omit<SignOptions, "components" | "request"> {
  /**
   * Covered components. Default: `@status`, `content-type` and `content-digest` when present,
   * the request's `@method` and `@target-uri` (`;req`), and the request's verified signature
   * (`"signature";key="<label>";req`) when `verifySignature` accepted one.
   */
  readonly components?: readonly ComponentSpec[];
  /** Content-Digest algorithms for the response body; false for none. Default sha-256. */
  readonly digest?: readonly DigestAlgorithm[] | false;
}

type Chunk = string | Uint8Array;

function toBuffer(chunk: Chunk, encoding?: BufferEncoding): Buffer {
  return typeof chunk === "string" ? Buffer.from(chunk, encoding) : Buffer.from(chunk);
}

/**
 * Signs every response (RFC 9421), bound to the request it answers. The body is buffered until
 * `end` so the Content-Digest and signature cover exactly what is sent; streaming responses are
 * therefore held in memory. A signing failure (e.g. KMS unavailable) answers 500 unsigned
 * rather than sending an unsigned success.
 */
export function signResponse(options: SignResponseOptions): RequestHandler {
  const digest = options.digest ?? ["sha-256"];
  return (req, res, next) => {
    const chunks: Buffer[] = [];
    const end = res.end.bind(res);
    let ending = false;

    res.write = ((chunk: Chunk, encoding?: BufferEncoding | (() => void), cb?: () => void) => {
      chunks.push(toBuffer(chunk, typeof encoding === "string" ? encoding : undefined));
      const callback = typeof encoding === "function" ? encoding : cb;
      callback?.();
      return true;
    }) as typeof res.write;

    res.end = ((
      chunk?: Chunk | (() => void),
      encoding?: BufferEncoding | (() => void),
      cb?: () => void,
    ) => {
      if (ending) return res;
      ending = true;
      if (chunk !== undefined && typeof chunk !== "function") {
        chunks.push(toBuffer(chunk, typeof encoding === "string" ? encoding : undefined));
      }
      const body = Buffer.concat(chunks);
      sign(body)
        .then(() => {
          if (res.getHeader("content-length") !== undefined)
            res.setHeader("content-length", body.length);
          end(body, cb);
        })
        .catch((error: unknown) => {
          res.removeHeader("content-digest");
          res.removeHeader("signature-input");
          res.removeHeader("signature");
          res.statusCode = 500;
          res.setHeader("content-type", "application/problem+json");
          const problem = JSON.stringify({
            type: "https://kms.dev/problems/signature/response-signing",
            title: "Response could not be signed",
            status: 500,
            detail: error instanceof ValidationError ? error.message : "the signer failed",
          });
          res.setHeader("content-length", Buffer.byteLength(problem));
          end(problem);
        });
      return res;
    }) as typeof res.end;

    async function sign(body: Buffer): Promise<void> {
      const noBody = req.method === "HEAD" || res.statusCode === 204 || res.statusCode === 304;
      if (digest !== false && !noBody && !res.hasHeader("content-digest")) {
        res.setHeader("content-digest", computeContentDigest(body, digest));
      }
      const headers = res.getHeaders() as Record<string, string | string[] | number | undefined>;
      const request = requestMessage(req, rawBodyOf(req));
      const accepted = verifiedSignatureOf(req);
      const components: ComponentSpec[] = options.components
        ? [...options.components]
        : [
            "@status",
            ...(["content-type", "content-digest"] as const).filter((f) => res.hasHeader(f)),
            { component: "@method", req: true },
            { component: "@target-uri", req: true },
            ...(accepted !== undefined && fieldLines(request.headers).has("signature")
              ? [{ component: "signature", key: accepted.label, req: true }]
              : []),
          ];
      const fields = await signMessage(
        { status: res.statusCode, headers, body },
        { ...options, components, request },
      );
      res.setHeader("signature-input", fields.signatureInput);
      res.setHeader("signature", fields.signature);
    }

    next();
  };
}
