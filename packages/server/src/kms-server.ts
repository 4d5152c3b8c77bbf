import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { ValidationError } from "@kms/core";
import { closeGracefully } from "./internal/graceful-close.ts";
import { isLoopback } from "./internal/loopback.ts";
import type { KmsServerOptions } from "./options.ts";
import { createKmsRequestHandler } from "./request-handler.ts";

/**
 * Bounds on how long one request may take, so a client that sends its headers or body slowly
 * cannot hold a connection (and its buffered bytes) for long. Change them on the returned
 * server (`server.requestTimeout = …`) or, with TLS, in `tls`.
 */
const REQUEST_TIMEOUT_MS = 30_000;
const HEADERS_TIMEOUT_MS = 10_000;
/**
 * Node's default TLS `handshakeTimeout` is 120 s, during which a client that never finishes its
 * handshake holds a connection before `headersTimeout` starts to count: the headers' bound is
 * used for the handshake too.
 */
const HANDSHAKE_TIMEOUT_MS = HEADERS_TIMEOUT_MS;
/**
 * A connection on which nothing is received or sent for this long is closed (`server.timeout`,
 * off in node). Once a request has arrived `requestTimeout` no longer applies, so without it a
 * client that never reads its responses (pipelining requests until node stops reading them)
 * would hold the connection, and the answers buffered for it, for ever.
 */
const IDLE_TIMEOUT_MS = 30_000;
/**
 * How often node looks for connections past those bounds. At its default, 30 s, a client that
 * trickles its headers would hold the connection for up to 40 s rather than 10.
 */
const TIMEOUT_CHECK_INTERVAL_MS = 1_000;

/**
 * An HTTP server (HTTPS with `tls`) serving the AWS KMS JSON protocol; call `listen` on it.
 *
 * Responses carry plaintext data, data keys and private keys. Without `tls` the server refuses
 * to listen on anything but a loopback address or a unix socket unless `insecureHttp` is true:
 * `listen` then emits `error` with a ValidationError (as it would for an address in use), the
 * socket is closed before any connection is served, and the listen callback is not called.
 *
 * `close()` stops accepting connections, closes those with no request being answered, answers
 * the requests in flight with `Connection: close`, and cuts what is still open `requestTimeout`
 * later.
 * @throws ValidationError for a malformed option.
 */
export function createKmsServer(
  options: KmsServerOptions & { readonly tls: https.ServerOptions },
): https.Server;
export function createKmsServer(options: KmsServerOptions): http.Server;
export function createKmsServer(options: KmsServerOptions): http.Server {
  const handler = createKmsRequestHandler(options);
  const timeouts = {
    requestTimeout: REQUEST_TIMEOUT_MS,
    headersTimeout: HEADERS_TIMEOUT_MS,
    connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
  };
  if (options.tls !== undefined) {
    if (typeof options.tls !== "object" || options.tls === null) {
      throw new ValidationError(`"tls" expected https.ServerOptions (key, cert, …)`);
    }
    const server = https.createServer(
      { ...timeouts, handshakeTimeout: HANDSHAKE_TIMEOUT_MS, ...options.tls },
      handler,
    );
    server.timeout = IDLE_TIMEOUT_MS;
    closeGracefully(server, "secureConnection");
    return server;
  }
  const server = http.createServer(timeouts, handler);
  server.timeout = IDLE_TIMEOUT_MS;
  closeGracefully(server, "connection");
  if (options.insecureHttp !== true) guardListen(server);
  return server;
}

/**
 * Turns the server's `listening` event into an `error` when it is bound to a non-loopback
 * address. The check runs where node announces the bound address, before any connection is
 * accepted (node emits `listening` on the tick of the bind, ahead of I/O), so no request is ever
 * served on the refused address.
 */
function guardListen(server: http.Server): void {
  const emit = server.emit.bind(server) as (event: string | symbol, ...args: unknown[]) => boolean;
  server.emit = ((event: string | symbol, ...args: unknown[]): boolean => {
    if (event === "listening") {
      const address = server.address();
      // A string address is a unix socket (or a Windows pipe): local by construction.
      if (address !== null && typeof address !== "string" && !isLoopback(address.address)) {
        server.close();
        return emit("error", insecureListen(address));
      }
    }
    return emit(event, ...args);
  }) as typeof server.emit;
}

function insecureListen(address: AddressInfo): ValidationError {
  return new ValidationError(
    `createKmsServer refuses to listen without TLS on ${address.address} port ${address.port}: ` +
      "responses carry plaintext data and keys. Pass tls, listen on a loopback address or a " +
      "unix socket, or set insecureHttp: true",
  );
}
