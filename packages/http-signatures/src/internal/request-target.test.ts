import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { receivedTarget, type TargetParts } from "./request-target.ts";

const PARTS = [
  "href",
  "protocol",
  "host",
  "hostname",
  "port",
  "pathname",
  "search",
  "hash",
  "username",
  "password",
] as const satisfies readonly (keyof TargetParts)[];

const partsOf = (target: TargetParts): Record<string, string> =>
  Object.fromEntries(PARTS.map((part) => [part, target[part]]));

// Pieces the parser keeps as they are, and pieces it rewrites (percent-encodes, decodes, drops)
// or that end the path: targets built from both reach the cut-out parts and the parser alike.
const PIECES = [
  ..."aZ09-._~!$&()*+,;=:@/[]",
  "?",
  "%41",
  "%2F",
  "%zz",
  "%",
  "'",
  " ",
  '"',
  "<",
  ">",
  "`",
  "{",
  "}",
  "|",
  "^",
  "\u00e9",
  "\u0001",
  "\u007f",
];

const HOSTS = [
  "a.example",
  "A.Example",
  "a.example:80",
  "a.example:443",
  "a.example:8443",
  "127.0.0.1:3000",
  "[::1]:8080",
  "[::1]",
];

describe("receivedTarget, origin form", () => {
  it("gives the parts the WHATWG parser gives, with or without it", () => {
    let cut = 0;
    fc.assert(
      fc.property(
        fc.constantFrom("http", "https"),
        fc.constantFrom(...HOSTS),
        fc.array(fc.constantFrom(...PIECES), { maxLength: 12 }).map((p) => `/${p.join("")}`),
        (protocol, host, target) => {
          const { url, parsed } = receivedTarget(protocol, host, target);
          if (typeof parsed === "string") return; // refused: nothing is derived from it
          if (!(parsed instanceof URL)) cut++;
          expect(partsOf(parsed)).toEqual(partsOf(new URL(url)));
        },
      ),
      { numRuns: 3000 },
    );
    // Most generated targets have a piece the parser rewrites; enough must not.
    expect(cut).toBeGreaterThan(100);
  });

  it.each([
    ["http", "a.example", "/hello?name=bench"],
    ["http", "A.EXAMPLE:80", "/a/b?"],
    ["https", "a.example:443", "/?x=1&y[]=2"],
    ["https", "[::1]:8443", "/p:@!$&()*+,;=-._~%C3%A9"],
  ])("cuts %s://%s%s without the parser, as the parser reads it", (protocol, host, target) => {
    const { url, parsed } = receivedTarget(protocol, host, target);
    expect(parsed).not.toBeInstanceOf(URL);
    expect(partsOf(parsed as TargetParts)).toEqual(partsOf(new URL(url)));
  });

  it.each([
    ["/a'b", "the path keeps ' but the legacy parser would not: left to the parser"],
    ["/a?b'c", "the parser escapes ' in an http query"],
    ["/a?b c", "the parser escapes a space"],
    ["/a%zz", "a malformed escape"],
    ["/\u00e9", "non-ASCII"],
  ])("leaves %s to the parser (%s)", (target) => {
    const { url, parsed } = receivedTarget("http", "a.example", target);
    expect(parsed).toBeInstanceOf(URL);
    expect((parsed as URL).href).toBe(new URL(url).href);
  });

  it("cuts nothing for a scheme other than http or https", () => {
    const { parsed } = receivedTarget("HTTP", "a.example", "/a");
    expect(parsed).toBeInstanceOf(URL);
    expect((parsed as URL).href).toBe("http://a.example/a");
  });
});
