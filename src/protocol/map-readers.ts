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
/** Longest string value (in bytes) a reader keeps, per value position, to give again when the same bytes come. */
const MAX_KEPT_STRING = 16;

/**
 * Map readers compiled per key encoding, for the decoder: the mirror of
 * MapWriters. Read key by key, a `{seq, value}` stream item costs a key
 * lookup per key (bytes compared against a cache of key strings), a step
 * through the key-sequence tree, a generic dispatch per value and a new
 * string for a string value: about 1,400 instructions (callgrind). Once a
 * key sequence is common enough to have an object maker (see ObjectShapes),
 * the decoder compiles a reader from the bytes its keys came in: it
 * compares each key's bytes as constants, decodes small integers, floats
 * and strings it has just seen in place, hands other values back to the
 * decoder, and returns an object literal of the keys. Each nesting level
 * tries its last reader first (a stream's items have the same keys every
 * time); a map whose key bytes differ is read key by key from its start,
 * which gives its level the reader of its own keys, if they have one.
 *
 * A string value of up to 16 bytes is kept per value position with its
 * bytes, and given again when the next map has the same bytes there (the
 * same text: a status, a type name), instead of being decoded anew.
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
  const lines: string[] = ["const b = d.bytes, end = d.end;", "let p = d.pos, h = 0;"];
  keys.forEach((key, i) => {
    // The value position's kept string: its header byte (-1: none yet), its length with the header, its bytes, its text.
    state.push(`let n${i} = -1, l${i} = 0, t${i} = undefined, s${i} = "";`);
    lines.push(`let v${i};`);
    lines.push(`if (p + ${key.length + 1} > end) return MISS;`);
    if (key.length <= 16) {
      lines.push(`if (${key.map((byte, at) => `b[p + ${at}] !== ${byte}`).join(" || ")}) return MISS;`);
    } else {
      lines.push(`if (!same(b, p, K${i}, ${key.length})) return MISS;`);
      state.push(`const K${i} = new Uint8Array([${key.join(", ")}]);`);
    }
    lines.push(`p += ${key.length};`, "h = b[p];");
    // The decoder's own forms for these heads, in place; the rest through it.
    lines.push(
      `if (h < 0x80) { v${i} = h; p += 1; }`,
      `else if (h >= 0xe0) { v${i} = h - 0x100; p += 1; }`,
      `else if (h === n${i} && p + l${i} <= end && same(b, p + 1, t${i}, l${i} - 1)) { v${i} = s${i}; p += l${i}; }`,
      `else if (h === 0xcc) { if (p + 2 > end) return NOT_PLAIN; v${i} = b[p + 1]; p += 2; }`,
      `else if (h === 0xcd) { if (p + 3 > end) return NOT_PLAIN; v${i} = (b[p + 1] << 8) | b[p + 2]; p += 3; }`,
      `else if (h === 0xcb) { if (p + 9 > end) return NOT_PLAIN; v${i} = b.readDoubleBE(p + 1); p += 9; }`,
      `else {`,
      `  d.pos = p; v${i} = d.valueAt(level + 1); if (v${i} === NOT_PLAIN) return NOT_PLAIN;`,
      `  if (h > 0xa0 && h <= ${0xa0 + MAX_KEPT_STRING}) { n${i} = h; l${i} = h - 0x9f; t${i} = keep(b, p + 1, l${i} - 1, t${i}); s${i} = v${i}; }`,
      `  p = d.pos;`,
      `}`,
    );
  });
  lines.push("d.pos = p;", `return {${names.map((name, i) => `${JSON.stringify(name)}: v${i}`).join(", ")}};`);
  const body = `${state.join("\n")}\nreturn function read(d, level) {\n${lines.join("\n")}\n};`;
  try {
    return new Function("MISS", "NOT_PLAIN", "same", "keep", body)(MISS, notPlain, sameBytes, keepBytes) as MapReader["read"];
  } catch {
    // Code generation from strings is disallowed here.
    return null;
  }
}

/** Whether `n` bytes of `b` from `at` are those of `kept` (undefined: nothing kept, never the same). */
function sameBytes(b: Buffer, at: number, kept: Uint8Array | undefined, n: number): boolean {
  if (kept === undefined) return false;
  for (let i = 0; i < n; i++) if (b[at + i] !== kept[i]) return false;
  return true;
}

/** Copies `n` bytes of `b` from `at` into `into` (made if need be), to compare later ones with. */
function keepBytes(b: Buffer, at: number, n: number, into: Uint8Array | undefined): Uint8Array {
  const kept = into ?? new Uint8Array(MAX_KEPT_STRING);
  for (let i = 0; i < n; i++) kept[i] = b[at + i] as number;
  return kept;
}
