/**
 * What a compiled map writer uses of its encoder: where bytes go, and how a
 * value is written (its own encoding rules, and limits).
 */
export interface MapTarget {
  /** The buffer being written; may change when a value is written (the encoder's own buffer grows). */
  buffer: Buffer;
  /** Where the next byte goes. */
  pos: number;
  /** End of the room in {@link buffer}. */
  limit: number;
  /** Writes the value at `position` of a map at nesting `level`, at {@link pos}; false when it cannot. */
  placedValue(value: unknown, level: number, position: number): boolean;
  /** A DataView over all of `buffer` (the one made for it before, if any). */
  viewOf(buffer: Buffer): DataView;
}

/**
 * Writes one plain object whose enumerable keys (own and inherited, in for-in
 * order) are exactly its key sequence, as a MessagePack map; false, leaving
 * garbage past `target.pos`, when they are not or a value cannot be written.
 */
export type MapWriter = (target: MapTarget, object: Record<string, unknown>, level: number) => boolean;

/** Maps of more keys are written key by key. */
export const MAX_WRITER_KEYS = 8;
/** Maps encoded with one key sequence in a row, at one nesting level, before a writer is made for it. */
const WRITE_AFTER = 8;
/** Writers per encoder; past this, maps of new key sequences are written key by key. */
const MAX_WRITERS = 256;
/** Longest key a writer holds, in UTF-8 bytes: its encoding is compiled into the writer. */
const MAX_KEY_BYTES = 64;
/** Nesting levels that learn: deeper maps are written key by key. */
const LEARNING_LEVELS = 8;

/** The key sequence a nesting level last wrote key by key, and how many maps in a row had it. */
class LevelMemory {
  readonly keys: string[] = [];
  length = -1;
  streak = 0;
  writer: MapWriter | undefined;
}

/**
 * Map writers compiled per key sequence, for the encoder. Written key by
 * key, a small map costs a for-in walk, a slot lookup per key and a generic
 * dispatch per value: for a `{seq, value}` stream item about 1,130
 * instructions (callgrind), where checking its keys and storing the bytes
 * takes about 400. A key sequence of up to {@link MAX_WRITER_KEYS} keys met
 * {@link WRITE_AFTER} times in a row at one nesting level gets a function
 * that checks an object's keys in one for-in walk (identity comparisons of
 * interned strings), stores the map header and the keys' encodings as
 * constant 32-bit words through a DataView (a byte at a time cost twice the
 * instructions), writes small unsigned integers in place, and writes the
 * string a value position wrote last, if the value is that string again,
 * from its kept encoding (up to 16 bytes, as four words); other values go
 * through the encoder. Encoding `{seq, value: "item"}` whole costs about 700
 * instructions; of the writer's 360, the for-in check is about 110. Each
 * level tries its last writer first: a stream's items, and the maps nested
 * in them at each level, have the same keys every time. A map of other
 * keys fails the check at its first differing key and is written key by
 * key, which learns its sequence.
 *
 * The for-in walk also visits enumerable keys an object inherits, so an
 * object with one more key anywhere fails the check (the key-by-key path
 * then decides). A writer that gives up (a value the plain encoder does
 * not take, no room left) leaves the map to the key-by-key path, which
 * reads the object again: an enumerable getter then runs twice. At most
 * 256 writers are made per encoder; keys of more than 64 bytes never get
 * one. The writer is compiled from the keys (`new Function`), each written
 * as `JSON.stringify(key)`, a string literal whatever the key holds, and
 * read as `o[literal]`, which for an own `__proto__` key (from JSON.parse)
 * reads that key as for-in sees it. Where code generation is disallowed
 * (`--disallow-code-generation-from-strings`) every map is written key by
 * key, as before.
 */
export class MapWriters {
  private readonly levels: LevelMemory[] = [];
  /** Writers made, by their keys joined with NUL, so a sequence met again after others reuses its writer. */
  private readonly made = new Map<string, MapWriter>();
  private disabled = false;

  constructor() {
    for (let i = 0; i < LEARNING_LEVELS; i++) this.levels.push(new LevelMemory());
  }

  /** The writer to try first for a map at `level`, if any. */
  writerAt(level: number): MapWriter | undefined {
    return level < LEARNING_LEVELS ? (this.levels[level] as LevelMemory).writer : undefined;
  }

  /**
   * The key list of the level's memory, for the key-by-key path to compare
   * and record keys in as it walks them (see {@link learned}); undefined for
   * a level that does not learn.
   */
  keysAt(level: number): string[] | undefined {
    return level < LEARNING_LEVELS && !this.disabled ? (this.levels[level] as LevelMemory).keys : undefined;
  }

  /**
   * After a map of `count` keys was written key by key at `level`; `same`
   * when each of its keys was the one already in {@link keysAt}'s list at its
   * position (otherwise the walk has stored its own there).
   */
  learned(level: number, count: number, same: boolean): void {
    const memory = this.levels[level] as LevelMemory;
    if (same && memory.length === count) {
      if (++memory.streak === WRITE_AFTER) this.install(memory);
      return;
    }
    memory.length = count;
    memory.streak = 1;
  }

  /** Gives the level the writer of its key sequence, making it if need be; none if it cannot have one. */
  private install(memory: LevelMemory): void {
    memory.writer = undefined;
    const count = memory.length;
    if (count < 1 || count > MAX_WRITER_KEYS) return;
    const keys = memory.keys.slice(0, count);
    const id = keys.join("\0");
    let writer = this.made.get(id);
    if (writer === undefined) {
      if (this.disabled || this.made.size >= MAX_WRITERS) return;
      const compiled = compile(keys);
      if (compiled === null) {
        this.disabled = true;
        return;
      }
      if (compiled === undefined) return;
      writer = compiled;
      this.made.set(id, writer);
    }
    memory.writer = writer;
  }
}

/** Longest encoding (header and bytes) of a string value a writer keeps per value position: four 32-bit words. */
const KEPT_BYTES = 16;

/** The writer of `keys`; undefined when a key cannot have one, null when code generation is disallowed. */
function compile(keys: readonly string[]): MapWriter | undefined | null {
  const state: string[] = [];
  const lines: string[] = [];
  lines.push("let i = 0;", "for (const k in o) {", "switch (i) {");
  keys.forEach((key, i) => lines.push(`case ${i}: if (k !== ${JSON.stringify(key)}) return false; break;`));
  lines.push("default: return false;", "}", "i++;", "}", `if (i !== ${keys.length}) return false;`);
  lines.push("let b = t.buffer, p = t.pos, dv = t.viewOf(b), v, at = 0;");
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i] as string;
    // A lone surrogate is the general encoder's to write (the encoder gives up on it).
    if (!(key as string & { isWellFormed(): boolean }).isWellFormed()) return undefined;
    const utf8 = Buffer.from(key, "utf8");
    if (utf8.length > MAX_KEY_BYTES) return undefined;
    // The map header before the first key; each key's str header and bytes.
    const bytes = [...(i === 0 ? [0x80 + keys.length] : []), ...(utf8.length < 32 ? [0xa0 + utf8.length] : [0xd9, utf8.length]), ...utf8];
    // Room for the key and a 3-byte integer after it; the key goes as whole
    // 32-bit words, whose last may run up to 3 bytes into that room (the
    // value then overwrites them).
    lines.push(`if (p + ${bytes.length + 3} > t.limit) return false;`);
    const words: string[] = [];
    for (let at = 0; at < bytes.length; at += 4) {
      // Signed: a small integer to the engine, where an unsigned word past 2^31 is a double.
      const word = ((bytes[at] ?? 0) << 24) | ((bytes[at + 1] ?? 0) << 16) | ((bytes[at + 2] ?? 0) << 8) | (bytes[at + 3] ?? 0);
      words.push(`dv.setInt32(p + ${at}, ${word});`);
    }
    lines.push(words.join(" "), `p += ${bytes.length};`);
    // The string this position last wrote, and its encoding as 32-bit words.
    // (n is 0 until one is kept: no encoding is empty, and "" or undefined must not match the start value.)
    // `var`: a `let` of the enclosing function costs a hole check per use.
    state.push(`var s${i} = "", n${i} = 0, a${i} = 0, b${i} = 0, c${i} = 0, d${i} = 0;`);
    // Small unsigned integers (a sequence number, a count) in place, in the
    // encoder's forms (room for 3 bytes was checked with the key's); the
    // string this position wrote last (a status, a type name) from its
    // words; the rest as the encoder writes them, after which a string of
    // up to 16 bytes encoded is kept.
    lines.push(
      `v = o[${JSON.stringify(key)}];`,
      "if (typeof v === 'number' && v >= 0 && v < 0x10000 && (v | 0) === v) {",
      "if (v < 0x80) b[p++] = v; else if (v < 0x100) { b[p] = 0xcc; b[p + 1] = v; p += 2; } else { b[p] = 0xcd; b[p + 1] = v >>> 8; b[p + 2] = v & 0xff; p += 3; }",
      `} else if (v === s${i} && n${i} !== 0 && p + ${KEPT_BYTES} <= t.limit) {`,
      `dv.setInt32(p, a${i}); if (n${i} > 4) { dv.setInt32(p + 4, b${i}); if (n${i} > 8) { dv.setInt32(p + 8, c${i}); if (n${i} > 12) dv.setInt32(p + 12, d${i}); } }`,
      `p += n${i};`,
      `} else {`,
      `t.pos = at = p; if (!t.placedValue(v, level, ${i})) return false; b = t.buffer; p = t.pos; dv = t.viewOf(b);`,
      `if (typeof v === 'string' && p - at <= ${KEPT_BYTES} && at + ${KEPT_BYTES} <= b.length) {`,
      `s${i} = v; n${i} = p - at; a${i} = dv.getInt32(at); b${i} = dv.getInt32(at + 4); c${i} = dv.getInt32(at + 8); d${i} = dv.getInt32(at + 12);`,
      "}",
      "}",
    );
  }
  lines.push("t.pos = p;", "return true;");
  try {
    return new Function(`${state.join("\n")}\nreturn function writeMap(t, o, level) {\n${lines.join("\n")}\n};`)() as MapWriter;
  } catch {
    // Code generation from strings is disallowed here.
    return null;
  }
}
