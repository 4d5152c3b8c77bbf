import type { Server } from "node:http";

/**
 * The `host[:port]`s this instance answers to: the signature policies' `authorities`. A signed
 * request's authority is whatever its client puts in Host, so without this list a webhook or
 * admin call signed for another instance holding the same key (another port, the README's
 * `WEBHOOK_URL` setup) verifies here when replayed with that instance's Host, and each
 * instance's nonce store, which knows only its own requests, lets it through once more.
 *
 * The loopback names follow the port the server listens on, known only once it does (`PORT=0`,
 * `app.listen(0)` in the tests); `publicAuthorities` (DEMO_PUBLIC_AUTHORITIES) are added for
 * clients that reach it through a proxy forwarding their Host.
 */
export class ServerAuthorities {
  /**
   * Given to the signature policy by reference, and updated in place when the server listens:
   * the guard reads it on every verification. Empty until then, when no request can arrive.
   */
  readonly list: string[] = [];
  readonly #public: readonly string[];

  constructor(publicAuthorities: readonly string[] = []) {
    this.#public = publicAuthorities;
  }

  /**
   * Follows `server`'s port each time it starts listening (supertest listens per request). On a
   * pipe or Unix socket there is no port for a loopback name to carry: only the public ones.
   */
  follow(server: Server): void {
    server.on("listening", () => {
      const address = server.address();
      const loopback =
        address === null || typeof address === "string" ? [] : loopbackAuthorities(address.port);
      this.list.splice(0, this.list.length, ...loopback, ...this.#public);
    });
  }
}

/** What a client on this machine names in Host: the server listens on 127.0.0.1 only. */
export function loopbackAuthorities(port: number): string[] {
  return [`127.0.0.1:${port}`, `localhost:${port}`];
}
