/**
 * What a compiled map reader uses of its decoder: the input, and how any
 * other value is decoded (its own rules and limits).
 */
export interface MapSource {
  /** The input being decoded. */
  bytes: Buffer;
  /** Where the next byte is read. */
  pos: number;
  /** End of the input. */
  end: number;
  /** Decodes the value at {@link pos}, at nesting `level`, and moves past it; the decoder's "not plain" mark when it cannot. */
  valueAt(level: number): unknown;
  /** A DataView over the memory of {@link bytes}, which start at {@link viewOffset} in it. */
  view(): DataView;
  /** Where {@link bytes} start in {@link view}'s memory (set by `view()`). */
  viewOffset: number;
}

/** Returned by a reader whose keys are not the map's: the decoder reads the map key by key from where it started. */
export const MISS: unique symbol = Symbol("rapt.mapReaderMiss");

/** Reads the keys and values of one map whose keys are encoded exactly as its own, after the map's header. */
export interface MapReader {
  /** Entries of the maps it reads. */
  readonly size: number;
  /**
   * The object, {@link MISS} (leaving `source.pos` anywhere: the caller
   * restores it) when a key's bytes differ, or the decoder's "not plain"
   * mark when a value is not plain or the input ends within it.
   */
  read(source: MapSource, level: number): unknown;
}

/** Longest encoded key (header and bytes) a reader compares: its bytes are compiled in. */
const MAX_KEY_BYTES = 64;
/** Readers per decoder; past this, maps of new key sequences are read key by key. */
const MAX_READERS = 256;
/** Nesting levels that have a reader to try: deeper maps are read key by key. */
const READING_LEVELS = 8;
/**
 * Longest string value (in bytes) a reader keeps, per value position, to
 * give again when the same bytes come: with its header, four 32-bit words.
 */
const MAX_KEPT_STRING = 15;

/**
 * Map readers compiled per key encoding, for the decoder: the mirror of
 * MapWriters. Read key by key, a `{seq, value}` stream item costs a key
 * lookup per key (bytes compared against a cache of key strings), a step
 * through the key-sequence tree, a generic dispatch per value and a new
 * string for a string value: about 1,400 instructions (callgrind). Once a
 * key sequence is common enough to have an object maker (see ObjectShapes),
 * the decoder compiles a reader from the bytes its keys came in: it
 * compares each key's bytes as constant 32-bit words, decodes small
 * integers, floats and strings it has just seen in place, hands other
 * values back to the decoder, and returns an object literal of the keys. Each nesting level
 * tries its last reader first (a stream's items have the same keys every
 * time); a map whose key bytes differ is read key by key from its start,
 * which gives its level the reader of its own keys, if they have one.
 *
 * A string value of up to 15 bytes is kept per value position with its
 * encoding, as up to four words, and given again when the next map has the
 * same bytes there (the same text: a status, a type name), instead of
 * being decoded anew. The words are compared masked to the encoding's
 * length, so they may reach up to 3 bytes past it, but never past the
 * input: a string that ends closer to the end than that is decoded.
 * Comparing a word at a time, where byte by byte before, took a `{seq,
 * value: "item"}` reader from about 373 to 252 instructions (callgrind,
 * the streaming client).
 *
 * Keys are compiled as byte values and property names as
 * `JSON.stringify(name)`, a string literal whatever the name holds; the
 * decoder never gives a key sequence holding `__proto__` (it refuses that
 * key), the one name a literal treats differently from an assignment. At
 * most 256 readers are made per decoder, none for keys encoded in more
 * than 64 bytes, and none where code generation is disallowed
 * (`--disallow-code-generation-from-strings`): maps are then read key by
 * key, as before.
 */
export class MapReaders {
  private readonly levels: Array<MapReader | undefined> = new Array<MapReader | undefined>(READING_LEVELS).fill(undefined);
  private made = 0;
  private disabled = false;
  private readonly notPlain: symbol;

  /** `notPlain` is the decoder's mark for a value it leaves to the general decoder. */
  constructor(notPlain: symbol) {
    this.notPlain = notPlain;
  }

  /** The reader to try first for a map at `level`, if any. */
  readerAt(level: number): MapReader | undefined {
    return level < READING_LEVELS ? this.levels[level] : undefined;
  }

  /** Makes `reader` the one `level` tries first. */
  use(level: number, reader: MapReader): void {
    if (level < READING_LEVELS) this.levels[level] = reader;
  }

  /** Whether a map at `level` could get a reader now (a level that reads, and readers left to make). */
  canMake(level: number): boolean {
    return level < READING_LEVELS && !this.disabled && this.made < MAX_READERS;
  }

  /**
   * The reader of maps whose keys are the bytes of `input` from
   * `ranges[2i]` to `ranges[2i + 1]`, named `names[i]`; null when they
   * cannot have one (a key too long, no readers left, no code generation).
   */
  make(input: Uint8Array, ranges: readonly number[], names: readonly string[]): MapReader | null {
    if (this.disabled || this.made >= MAX_READERS) return null;
    const keys: number[][] = [];
    for (let i = 0; i < names.length; i++) {
      const start = ranges[2 * i] as number;
      const end = ranges[2 * i + 1] as number;
      if (end - start > MAX_KEY_BYTES || end <= start) return null;
      keys.push(Array.from(input.subarray(start, end)));
    }
    const read = compile(keys, names, this.notPlain);
    if (read === null) {
      this.disabled = true;
      return null;
    }
    this.made++;
    return { size: names.length, read };
  }
}

/** The read function of `keys` (encoded) named `names`; null when code generation is disallowed. */
function compile(keys: readonly number[][], names: readonly string[], notPlain: symbol): MapReader["read"] | null {
  const state: string[] = [];
  const lines: string[] = ["const b = d.bytes, end = d.end, dv = d.view(), o = d.viewOffset;", "let p = d.pos, h = 0, at = 0;"];
  keys.forEach((key, i) => {
    // The value position's kept string: its header byte (-1: none yet), its
    // encoded length, that rounded up to whole words, its encoding as up to
    // four words with a mask each (0 past the length), its text. `var`:
    // a `let` of the enclosing function costs a hole check per read.
    state.push(`var n${i} = -1, l${i} = 0, r${i} = 0, s${i} = "";`);
    state.push(`var w${i}a = 0, w${i}b = 0, w${i}c = 0, w${i}d = 0, m${i}a = 0, m${i}b = 0, m${i}c = 0, m${i}d = 0;`);
    lines.push(`let v${i};`);
    lines.push(`if (p + ${key.length + 1} > end) return MISS;`);
    lines.push(`if (${keyCompare(key)}) return MISS;`);
    lines.push(`p += ${key.length};`, "h = b[p];");
    const word = (k: number, w: string, m: string) => `((dv.getInt32(o + p + ${k * 4}) ^ ${w}) & ${m}) === 0`;
    // The decoder's own forms for these heads, in place; the rest through it.
    lines.push(
      `if (h < 0x80) { v${i} = h; p += 1; }`,
      `else if (h >= 0xe0) { v${i} = h - 0x100; p += 1; }`,
      `else if (h === n${i} && p + r${i} <= end && ${word(0, `w${i}a`, `m${i}a`)} && (r${i} === 4 || (${word(1, `w${i}b`, `m${i}b`)} && (r${i} === 8 || (${word(2, `w${i}c`, `m${i}c`)} && (r${i} === 12 || ${word(3, `w${i}d`, `m${i}d`)}))))))`,
      `  { v${i} = s${i}; p += l${i}; }`,
      `else if (h === 0xcc) { if (p + 2 > end) return NOT_PLAIN; v${i} = b[p + 1]; p += 2; }`,
      `else if (h === 0xcd) { if (p + 3 > end) return NOT_PLAIN; v${i} = (b[p + 1] << 8) | b[p + 2]; p += 3; }`,
      `else if (h === 0xcb) { if (p + 9 > end) return NOT_PLAIN; v${i} = b.readDoubleBE(p + 1); p += 9; }`,
      `else {`,
      `  d.pos = at = p; v${i} = d.valueAt(level + 1); if (v${i} === NOT_PLAIN) return NOT_PLAIN; p = d.pos;`,
      // Kept only where its words are all in the input (a string ending less than a word before the end is not).
      `  if (h > 0xa0 && h <= ${0xa0 + MAX_KEPT_STRING} && at + ((h - 0x9c) & ~3) <= end) {`,
      `    n${i} = h; l${i} = h - 0x9f; r${i} = (h - 0x9c) & ~3; s${i} = v${i};`,
      `    w${i}a = dv.getInt32(o + at); m${i}a = mask(l${i});`,
      `    w${i}b = r${i} > 4 ? dv.getInt32(o + at + 4) : 0; m${i}b = mask(l${i} - 4);`,
      `    w${i}c = r${i} > 8 ? dv.getInt32(o + at + 8) : 0; m${i}c = mask(l${i} - 8);`,
      `    w${i}d = r${i} > 12 ? dv.getInt32(o + at + 12) : 0; m${i}d = mask(l${i} - 12);`,
      `  }`,
      `}`,
    );
  });
  lines.push("d.pos = p;", `return {${names.map((name, i) => `${JSON.stringify(name)}: v${i}`).join(", ")}};`);
  const body = `${state.join("\n")}\nreturn function read(d, level) {\n${lines.join("\n")}\n};`;
  try {
    return new Function("MISS", "NOT_PLAIN", "mask", body)(MISS, notPlain, byteMask) as MapReader["read"];
  } catch {
    // Code generation from strings is disallowed here.
    return null;
  }
}

/** The mask of a big-endian word's first `n` bytes (all four from 4, none from 0). */
function byteMask(n: number): number {
  return n >= 4 ? -1 : n <= 0 ? 0 : -1 << (32 - 8 * n);
}

/**
 * The test that the bytes at `p` differ from `key`: whole 32-bit words
 * through the DataView `dv` (in whose memory the input starts at `o`),
 * then a 16-bit one and a byte for the rest. A byte at a time cost about
 * twice the instructions. The caller checked that the key's bytes are in
 * the input.
 */
function keyCompare(key: readonly number[]): string {
  const tests: string[] = [];
  let at = 0;
  for (; at + 4 <= key.length; at += 4) {
    // Signed, as getInt32 reads it.
    const word = ((key[at] as number) << 24) | ((key[at + 1] as number) << 16) | ((key[at + 2] as number) << 8) | (key[at + 3] as number);
    tests.push(`dv.getInt32(o + p + ${at}) !== ${word}`);
  }
  if (at + 2 <= key.length) {
    tests.push(`dv.getUint16(o + p + ${at}) !== ${((key[at] as number) << 8) | (key[at + 1] as number)}`);
    at += 2;
  }
  if (at < key.length) tests.push(`b[p + ${at}] !== ${key[at] as number}`);
  return tests.join(" || ");
}
