import type * as http from "node:http";
import type { Socket } from "node:net";

/**
 * Makes `server.close()` a shutdown that ends: requests being answered are answered (with
 * `Connection: close`), a request answered before its body arrived keeps the handler's grace for
 * the rest, every other connection is closed at once, and a connection still open
 * `server.requestTimeout` after `close()` is cut.
 *
 * Node's own `close()` closes only idle keep-alive connections and stops the checks behind
 * `headersTimeout` and `requestTimeout`. A client trickling its headers then holds the server open
 * for ever, and a keep-alive client's next requests are still served after `close()`, so a
 * shutdown (`kms serve` on SIGTERM) waits for as long as any client likes.
 *
 * `connectionEvent` is where the sockets requests arrive on are announced: `connection` for HTTP,
 * `secureConnection` for HTTPS, whose `connection` gives the raw socket under the TLS one. A TLS
 * handshake still under way at `close()` is bounded by `handshakeTimeout` instead.
 */
export function closeGracefully(
  server: http.Server,
  connectionEvent: "connection" | "secureConnection",
): void {
  /** Each open connection → the responses on it not yet finished (several when pipelined). */
  const open = new Map<Socket, Set<http.ServerResponse>>();
  let closing = false;

  server.on(connectionEvent, (socket: Socket) => {
    open.set(socket, new Set());
    socket.once("close", () => open.delete(socket));
  });
  // Ahead of the handler, so that its answer already carries Connection: close.
  server.prependListener("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket;
    let responses = open.get(socket);
    if (responses === undefined) {
      responses = new Set();
      open.set(socket, responses);
    }
    responses.add(res);
    if (closing) res.shouldKeepAlive = false;
    const settle = (): void => {
      responses.delete(res);
      // Answered in keep-alive form before close() came: nothing else will end the connection.
      if (closing && responses.size === 0) socket.end();
    };
    res.once("close", () => {
      // Answered before its body arrived (refused from its headers): the handler drains the rest
      // for a moment so the client reads the answer rather than a reset, and close() lets it.
      if (req.complete || req.destroyed) settle();
      else req.once("close", settle);
    });
  });

  const close = server.close.bind(server);
  server.close = ((callback?: (error?: Error) => void) => {
    if (!closing) {
      closing = true;
      for (const [socket, responses] of open) {
        if (responses.size === 0) {
          // Idle, or still sending a request head: no request of it has reached the handler.
          socket.destroy();
          continue;
        }
        for (const res of responses) if (!res.headersSent) res.shouldKeepAlive = false;
      }
      const deadline = server.requestTimeout;
      if (deadline > 0 && open.size > 0) {
        setTimeout(() => {
          for (const socket of open.keys()) socket.destroy();
        }, deadline).unref();
      }
    }
    return close(callback);
  }) as typeof server.close;
}
