/**
 * How `qs` (Express 4's default, Express 5's and Nest's `"extended"` query parser) reads the
 * names of a query, ported from qs 6.17's `parse.js` with its default options (those Express sets
 * change nothing here) and with `allowDots`. A name is a path: `a[b][]` is `["a", "b", ""]`,
 * where `""` stands for `[]`, which appends to an array. Spellings that the WHATWG parser keeps
 * apart fall on one path: `[a]` is `a`, `a[b]x` is `a[b]`, `a[x=y]=2` is the name `a[x=y]` (qs
 * splits at `]=` before `=`), a name with an escape that is not UTF-8 (`a%FF`) is kept undecoded.
 * `signature-base.ts` asks it whether a covered `@query-param` is read otherwise than alone.
 */

/** qs's default `depth`: groups past the fifth stay one literal key. */
const QS_DEPTH = 5;

/**
 * The pieces of the query that qs reads under one path: `NO_PIECE`, the index of the one piece,
 * or `PIECES` for more than one. Enough to tell whether a piece other than a given one is there.
 */
type QsPieces = number;
const NO_PIECE = -1;
const PIECES = -2;

function counted(pieces: QsPieces, piece: number): QsPieces {
  return pieces === NO_PIECE ? piece : PIECES;
}

/** Whether `pieces` holds a piece other than `own`. */
function others(pieces: QsPieces, own: number): boolean {
  return pieces !== NO_PIECE && pieces !== own;
}

/** A node of the trie of the paths that qs reads the names under one first key as. */
interface QsNode {
  /** Pieces whose path ends here. */
  ends: QsPieces;
  /** Pieces whose path goes on below here. */
  below: QsPieces;
  children: Map<string, QsNode> | undefined;
}

/** How qs reads the names of a query, with one set of options. */
interface QsReading {
  /** The name qs reads in each piece (`""` for none). */
  readonly names: readonly string[];
  /** The pieces by the first key of their path; `""` is a leading `[]`. */
  readonly roots: ReadonlyMap<string, number[]>;
  /** Pieces whose first key is an array index (`0`, `[3]`): top-level `[]` appends among them. */
  readonly integerRoots: QsPieces;
  /** The trie under each first key, built when a covered name first needs it. */
  readonly tries: Map<string, QsNode>;
}

function qsReading(names: readonly string[]): QsReading {
  const roots = new Map<string, number[]>();
  let integerRoots = NO_PIECE;
  for (let piece = 0; piece < names.length; piece++) {
    const name = names[piece] as string;
    if (name === "") continue;
    const root = qsRoot(name);
    const group = roots.get(root);
    if (group === undefined) roots.set(root, [piece]);
    else group.push(piece);
    if (ARRAY_INDEX.test(root)) integerRoots = counted(integerRoots, piece);
  }
  return { names, roots, integerRoots, tries: new Map() };
}

/** The trie of the paths under `root`, or `undefined` when no piece has that first key. */
function qsTrie(reading: QsReading, root: string): QsNode | undefined {
  let trie = reading.tries.get(root);
  if (trie === undefined) {
    const group = reading.roots.get(root);
    if (group === undefined) return undefined;
    trie = { ends: NO_PIECE, below: NO_PIECE, children: undefined };
    for (const piece of group) {
      const path = qsPath(reading.names[piece] as string);
      let node = trie;
      for (let level = 1; level < path.length; level++) {
        node.below = counted(node.below, piece);
        node.children ??= new Map();
        const segment = path[level] as string;
        let child = node.children.get(segment);
        if (child === undefined) {
          child = { ends: NO_PIECE, below: NO_PIECE, children: undefined };
          node.children.set(segment, child);
        }
        node = child;
      }
      node.ends = counted(node.ends, piece);
    }
    reading.tries.set(root, trie);
  }
  return trie;
}

/** A key qs reads as an array index (or `[]`, which appends); larger ones it keeps as keys. */
const ARRAY_INDEX = /^(?:0|[1-9][0-9]*)$/;

function isArrayElement(segment: string): boolean {
  return segment === "" || ARRAY_INDEX.test(segment);
}

/**
 * The name qs reads in a piece of the raw query: it turns `%5B` and `%5D` into brackets first,
 * ends the name at the first `]=` (else at the first `=`), and keeps the name undecoded (with
 * `+` as a space) when it is not valid percent-encoded UTF-8.
 */
function qsKey(piece: string): string {
  const clean = piece.includes("%") ? piece.replace(/%5B/gi, "[").replace(/%5D/gi, "]") : piece;
  const bracketEquals = clean.indexOf("]=");
  const end = bracketEquals === -1 ? clean.indexOf("=") : bracketEquals + 1;
  let key = end === -1 ? clean : clean.slice(0, end);
  if (key.includes("+")) key = key.replaceAll("+", " ");
  if (!key.includes("%")) return key;
  try {
    return decodeURIComponent(key);
  } catch {
    return key;
  }
}

/**
 * qs's `allowDots` rewriting: `a.b` is `a[b]`, `.a` is `[a]`; dots inside brackets, before
 * another dot or before a `[` stay.
 */
function dotsToBrackets(key: string): string {
  if (!key.includes(".")) return key;
  let result = "";
  let depth = 0;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c === 0x5b /* [ */) depth++;
    else if (c === 0x5d /* ] */ && depth > 0) depth--;
    else if (c === 0x2e /* . */ && depth === 0 && i + 1 < key.length) {
      const next = key.charCodeAt(i + 1);
      if (next !== 0x2e && next !== 0x5b) {
        let end = i + 1;
        while (end < key.length && key.charCodeAt(end) !== 0x2e && key.charCodeAt(end) !== 0x5b) {
          end++;
        }
        result += `[${key.slice(i + 1, end)}]`;
        i = end - 1;
        continue;
      }
    }
    result += key[i];
  }
  return result;
}

/**
 * The path qs reads `key` as: the text before the first `[`, then the content of each
 * balanced bracket group up to `QS_DEPTH` of them (text between and after groups is dropped);
 * an unclosed group, or what lies past the last group read, is one more key, kept as written
 * from its `[` on.
 */
function qsPath(key: string): string[] {
  const path: string[] = [];
  const first = key.indexOf("[");
  const parent = first === -1 ? key : key.slice(0, first);
  if (parent !== "") path.push(parent);
  let open = first;
  for (let groups = 0; open !== -1 && groups < QS_DEPTH; groups++) {
    let level = 1;
    let close = -1;
    for (let i = open + 1; i < key.length && close === -1; i++) {
      const c = key.charCodeAt(i);
      if (c === 0x5b) level++;
      else if (c === 0x5d && --level === 0) close = i;
    }
    if (close === -1) break;
    path.push(key.slice(open + 1, close));
    open = key.indexOf("[", close + 1);
  }
  if (open !== -1) path.push(key.slice(open));
  return path;
}

/** `qsPath(key)[0]`, without the rest of the path when the key does not start with `[`. */
function qsRoot(key: string): string {
  const first = key.indexOf("[");
  if (first === -1) return key;
  return first > 0 ? key.slice(0, first) : (qsPath(key)[0] as string);
}

/** How another piece of the query makes qs read something else at a covered name's path. */
export type QsConflict = "spelling" | "extended" | "prefix" | "array";

/**
 * Whether a piece other than `own` changes what qs reads at `path`: one on the same path (a
 * repeat, `?a=1&[a]=2`), on a longer one (`a` is then an array or object holding it), on a
 * shorter one (the reverse), or, where `path` goes through an array element (`a[]`, `a[0]`),
 * any other element of that array: qs appends `[]` in order and renumbers indices without gaps,
 * so `?a[]=2&a[0]=1` reads `a[0]` as `2` and `?a[0]=2&a[1]=1` reads `a[1]` as `1` where the
 * signed `?a[1]=1` alone put it at `a[0]`.
 */
function qsConflict(
  reading: QsReading,
  path: readonly string[],
  own: number,
): QsConflict | undefined {
  const root = path[0];
  if (root === undefined) return undefined;
  if (isArrayElement(root)) {
    // At the top only `[]` makes an array: qs gives its elements the keys 0, 1, … in order.
    const appended = reading.roots.get("");
    if (appended !== undefined && (appended.length > 1 || appended[0] !== own)) return "array";
    if (root === "" && others(reading.integerRoots, own)) return "array";
  }
  let node = qsTrie(reading, root);
  for (let level = 1; node !== undefined && level < path.length; level++) {
    if (others(node.ends, own)) return "prefix";
    const segment = path[level] as string;
    if (isArrayElement(segment) && others(node.below, own)) return "array";
    node = node.children?.get(segment);
  }
  if (node === undefined) return undefined;
  if (others(node.ends, own)) return "spelling";
  if (others(node.below, own)) return "extended";
  return undefined;
}

export const QS_CONFLICTS: Readonly<Record<QsConflict, string>> = {
  spelling: "spelled otherwise, as [a] for a, which qs reads as the same parameter",
  extended: "followed by [, which qs reads as the same parameter",
  prefix: "its part before a [ occurs as a name too, which qs reads as the same parameter",
  array:
    "qs reads it as an element of an array that other names in the query add to, and renumbers the elements",
};

/** How qs reads the names of one query: with its default options, and with `allowDots`. */
export interface QsNames {
  readonly plain: QsReading;
  /** `plain` when no name has a dot, else worked out on first use. */
  dotted: QsReading | undefined;
}

/**
 * How qs reads the names in `pieces`, the query split at every `&` (empty pieces kept: qs counts
 * them, and a covered parameter is found by the index of its piece).
 */
export function readQsNames(pieces: readonly string[]): QsNames {
  const names: string[] = [];
  let dots = false;
  for (const piece of pieces) {
    const name = piece === "" ? "" : qsKey(piece);
    names.push(name);
    if (!dots && name.includes(".")) dots = true;
  }
  const plain = qsReading(names);
  return { plain, dotted: dots ? undefined : plain };
}

/**
 * Why qs would read the covered parameter named `decoded` (as the WHATWG parser decodes it),
 * in piece `own` of the query, otherwise than alone, with its default options or with
 * `allowDots`, if it would.
 */
export function qsProblem(names: QsNames, decoded: string, own: number): string | undefined {
  const plain = qsConflict(names.plain, qsPath(decoded), own);
  if (plain !== undefined) return QS_CONFLICTS[plain];
  const dotted = dotsToBrackets(decoded);
  // Without a dot anywhere, allowDots reads every name as above.
  if (dotted === decoded && names.dotted === names.plain) return undefined;
  names.dotted ??= qsReading(names.plain.names.map(dotsToBrackets));
  if (qsConflict(names.dotted, qsPath(dotted), own) !== undefined) {
    return "another name in the query differs from it by dots, which qs with allowDots reads as brackets";
  }
  return undefined;
}
