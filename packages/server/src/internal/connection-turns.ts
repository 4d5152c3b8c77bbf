import type { ServerResponse } from "node:http";
import type { Socket } from "node:net";

/**
 * Serves the requests of one connection one after another.
 *
 * Node dispatches every request it parses off a connection at once and only queues the answers,
 * so a client that pipelines thousands of requests (reading nothing) had thousands of `Kms` calls
 * running at once, from one connection. HTTP/1.1 clients that do not pipeline — the AWS SDK and
 * the AWS CLI among them — send a request only once the previous one is answered, and see no
 * difference.
 *
 * While requests wait, the connection is not read from (`socket.pause()`), so that what waits is
 * what node had already read in one go, not whatever the client keeps sending; it is read again
 * once the last of them has its turn. Node resumes the socket after every request it parses, so
 * each `resume` is answered with a pause while requests wait: both run before the next read. Node's
 * own pause, for answers the client does not read, is kept: its `resume` handler pauses again for
 * as long as that lasts. The server's timeouts go on counting while the connection is paused.
 */
interface Line {
  serving: boolean;
  /** An answer sent on the connection ended it: node serves nothing after it. */
  ended: boolean;
  readonly waiting: ((served: boolean) => void)[];
}

const lines = new WeakMap<Socket, Line>();

/** A request's turn on its connection. */
export interface Turn {
  /** Passes the turn on, once `res` has been answered. */
  end(res: ServerResponse): void;
}

/**
 * Resolves with the turn once no other request on `socket` is being served, or undefined when an
 * answer sent meanwhile ends the connection (the request would run with nowhere to answer).
 */
export function takeTurn(socket: Socket): Promise<Turn | undefined> {
  let line = lines.get(socket);
  if (line === undefined) {
    const created: Line = { serving: false, ended: false, waiting: [] };
    socket.on("resume", () => {
      if (created.waiting.length > 0) socket.pause();
    });
    lines.set(socket, created);
    line = created;
  }
  if (line.ended) return Promise.resolve(undefined);
  const turn = turnOn(socket, line);
  if (!line.serving) {
    line.serving = true;
    return Promise.resolve(turn);
  }
  socket.pause();
  const queue = line.waiting;
  return new Promise((resolve) => {
    queue.push((served) => resolve(served ? turn : undefined));
  });
}

function turnOn(socket: Socket, line: Line): Turn {
  let over = false;
  return {
    end(res) {
      if (over) return;
      over = true;
      // Node ends the connection after this answer (`Connection: close`: close(), an HTTP/1.0
      // client, the client's own request): the requests behind it would never be answered.
      if (!res.shouldKeepAlive) {
        line.ended = true;
        for (const wake of line.waiting.splice(0)) wake(false);
      }
      const next = line.waiting.shift();
      if (next === undefined) {
        line.serving = false;
        return;
      }
      if (line.waiting.length === 0) socket.resume();
      next(true);
    },
  };
}
