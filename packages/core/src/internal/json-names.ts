/**
 * JSON.parse keeps the last of two equal member names; other readers (a proxy, a log pipeline,
 * another SDK, a person reviewing a policy) keep the first, so a document that repeats one means
 * different things to them. One scanner finds that for key policies and for @kms/server bodies.
 */

interface OpenValue {
  /** Names seen so far in an object; undefined for an array. */
  readonly names: Set<string> | undefined;
  /** The array position or member name of the value now being read inside it. */
  index: number;
  name: string;
  nameNext: boolean;
}

/** `path.key`, or `path["odd key"]` when the key is not an identifier. */
export function jsonMemberPath(path: string, key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key)
    ? `${path}.${key}`
    : `${path}[${JSON.stringify(key)}]`;
}

/**
 * The first member name that some object of `text` holds twice, compared after unescaping
 * (`"a"` and `"\u0061"` are one name), with its path (`$.Statement[1].Effect`). `text` must be
 * valid JSON: only its strings, brackets and commas are looked at, and the path is built only
 * for the answer.
 */
export function findRepeatedJsonName(
  text: string,
): { readonly name: string; readonly path: string } | undefined {
  const open: OpenValue[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = i + 1;
      while (text.charCodeAt(end) !== 0x22) end += text.charCodeAt(end) === 0x5c /* \ */ ? 2 : 1;
      const top = open.at(-1);
      if (top?.names !== undefined && top.nameNext) {
        const literal = text.slice(i, end + 1);
        const name = literal.includes("\\")
          ? (JSON.parse(literal) as string)
          : literal.slice(1, -1);
        top.name = name;
        if (top.names.has(name)) return { name, path: pathOf(open) };
        top.names.add(name);
        top.nameNext = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) {
      open.push({ names: new Set(), index: 0, name: "", nameNext: true });
    } else if (c === 0x5b /* [ */) {
      open.push({ names: undefined, index: 0, name: "", nameNext: false });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      open.pop();
    } else if (c === 0x2c /* , */) {
      const top = open.at(-1);
      if (top?.names !== undefined) top.nameNext = true;
      else if (top !== undefined) top.index++;
    }
  }
  return undefined;
}

function pathOf(open: readonly OpenValue[]): string {
  let path = "$";
  for (const value of open) {
    path = value.names !== undefined ? jsonMemberPath(path, value.name) : `${path}[${value.index}]`;
  }
  return path;
}
