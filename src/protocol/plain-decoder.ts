import { isUtf8 } from "node:buffer";
import { MapReaders, type MapSource, MISS } from "./map-readers.js";
import { MAX_SHAPE_KEYS, type MapKey, ObjectShapes, type ShapeNode } from "./object-shapes.js";

/** What a {@link PlainDecoder} enforces; the same limits the general decoder has. */
export interface PlainDecoderLimits {
  maxStrLength: number;
  maxBinLength: number;
  maxArrayLength: number;
  maxMapLength: number;
  /** Deepest level a non-empty array or map may open at (the outermost value is level 1). */
  maxDepth: number;
}

/** Largest memory a decoder keeps its DataView over between inputs: that of a socket read (64 KiB), not a large message's. */
const MAX_KEPT_VIEW_BYTES = 64 * 1024;

/** Returned by {@link PlainDecoder.decode} when the general decoder must decide. */
export const NOT_PLAIN: unique symbol = Symbol("rapt.notPlain");

const EMPTY = Buffer.alloc(0);
const fromCharCode = String.fromCharCode;

/** Map keys up to this many bytes are kept, so a stream of similar maps reuses its key strings. */
const MAX_CACHED_KEY = 16;
/** Keys kept per key length. */
const KEYS_PER_LENGTH = 16;

type Utf8Slice = (this: Buffer, start: number, end: number) => string;
/** Buffer's own UTF-8 slice (what `toString("utf8", start, end)` calls after checking its arguments). */
const utf8Slice: Utf8Slice =
  (Buffer.prototype as unknown as { utf8Slice?: Utf8Slice }).utf8Slice ??
  function (this: Buffer, start: number, end: number): string {
    return this.toString("utf8", start, end);
  };

interface CachedKey {
  bytes: Uint8Array;
  text: string;
}

/**
 * MessagePack decoding of plain data: everything but extension types and
 * 64-bit integers, giving the same values @msgpack/msgpack gives (strings,
 * numbers, booleans, null, Uint8Array views of the input, arrays, objects)
 * in about half the time, without the general decoder's explicit stack and
 * per-call DataView. Whatever it does not handle, or would refuse (an
 * extension, a 64-bit integer, a broken limit, truncated or trailing bytes,
 * an unknown type byte, a key that is not a string or number, `__proto__`),
 * it reports as {@link NOT_PLAIN} without throwing, and the caller decodes
 * the bytes with the general decoder, which returns the value or the error
 * it always gave. Strings that are not valid UTF-8 go to it as well.
 */
export class PlainDecoder implements MapSource {
  private readonly limits: PlainDecoderLimits;
  /** The input being decoded (public for {@link MapReaders}' readers). */
  bytes: Buffer = EMPTY;
  /** The input as given, for binary views of the same type the general decoder returns. */
  private input: Uint8Array = EMPTY;
  /** A DataView over the memory of {@link bytes}, made when a map reader first asks for one (see {@link view}). */
  private dataView: DataView | undefined;
  /** The input {@link viewOffset} was set for. */
  private viewInput: Uint8Array = EMPTY;
  /** Where {@link bytes} start in the memory of {@link view} (for map readers). */
  viewOffset = 0;
  pos = 0;
  end = 0;
  /** Levels allowed past `maxDepth` for the current decode (1 for an ITEMS array). */
  private extraDepth = 0;
  private readonly keys: Array<CachedKey[] | undefined> = [];
  /** Makers of the objects of common key sequences. */
  private readonly shapes = new ObjectShapes();
  /** Readers of the common key sequences, in the encoding their keys come in. */
  private readonly readers = new MapReaders(NOT_PLAIN);

  constructor(limits: PlainDecoderLimits) {
    this.limits = limits;
  }

  /** Decodes exactly one value filling `bytes`, or returns {@link NOT_PLAIN}. `extraDepth` lets containers nest that much deeper. */
  decode(bytes: Uint8Array, extraDepth = 0): unknown {
    this.input = bytes;
    this.bytes = bytes instanceof Buffer ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.end = bytes.length;
    this.extraDepth = extraDepth;
    try {
      const value = this.value(1);
      return this.pos === this.end ? value : NOT_PLAIN;
    } finally {
      // Not kept: the input may be a large message.
      this.bytes = EMPTY;
      this.input = EMPTY;
      this.viewInput = EMPTY;
      // A view is kept for the next input only over memory of a socket read's size at most.
      if (this.dataView !== undefined && this.dataView.byteLength > MAX_KEPT_VIEW_BYTES) {
        this.dataView = undefined;
      }
    }
  }

  /**
   * A DataView over the memory of {@link bytes}, which start at
   * {@link viewOffset} in it: for {@link MapReaders}' readers, which compare
   * keys and strings a word at a time. Made once per memory, not per input:
   * the inputs of one socket read (its frames' payloads) share it, and a new
   * DataView cost about 700 instructions.
   */
  view(): DataView {
    const b = this.bytes;
    let view = this.dataView;
    if (this.viewInput !== b) {
      const memory = b.buffer;
      // Once per input, not per map: the getter's cost does not matter here.
      if (view === undefined || view.buffer !== memory) view = this.dataView = new DataView(memory);
      this.viewOffset = b.byteOffset;
      this.viewInput = b;
    }
    return view as DataView;
  }

  /** Decodes the value at {@link pos} (for {@link MapReaders}' readers). */
  valueAt(level: number): unknown {
    return this.value(level);
  }

  private value(level: number): unknown {
    if (this.pos >= this.end) return NOT_PLAIN;
    const b = this.bytes;
    const head = b[this.pos++] as number;
    if (head < 0x80) return head;
    if (head >= 0xe0) return head - 0x100;
    if (head < 0x90) return this.map(head - 0x80, level);
    if (head < 0xa0) return this.array(head - 0x90, level);
    if (head < 0xc0) return this.string(head - 0xa0, false);
    switch (head) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.pos + 1 > this.end ? NOT_PLAIN : this.binary(b[this.pos++] as number);
      case 0xc5:
        return this.pos + 2 > this.end ? NOT_PLAIN : this.binary(this.u16());
      case 0xc6:
        return this.pos + 4 > this.end ? NOT_PLAIN : this.binary(this.u32());
      case 0xca:
        if (this.pos + 4 > this.end) return NOT_PLAIN;
        this.pos += 4;
        return b.readFloatBE(this.pos - 4);
      case 0xcb:
        if (this.pos + 8 > this.end) return NOT_PLAIN;
        this.pos += 8;
        return b.readDoubleBE(this.pos - 8);
      case 0xcc:
        return this.pos + 1 > this.end ? NOT_PLAIN : (b[this.pos++] as number);
      case 0xcd:
        return this.pos + 2 > this.end ? NOT_PLAIN : this.u16();
      case 0xce:
        return this.pos + 4 > this.end ? NOT_PLAIN : this.u32();
      case 0xd0:
        if (this.pos + 1 > this.end) return NOT_PLAIN;
        return ((b[this.pos++] as number) << 24) >> 24;
      case 0xd1:
        if (this.pos + 2 > this.end) return NOT_PLAIN;
        return (this.u16() << 16) >> 16;
      case 0xd2:
        if (this.pos + 4 > this.end) return NOT_PLAIN;
        this.pos += 4;
        return b.readInt32BE(this.pos - 4);
      case 0xd9:
        return this.pos + 1 > this.end ? NOT_PLAIN : this.string(b[this.pos++] as number, false);
      case 0xda:
        return this.pos + 2 > this.end ? NOT_PLAIN : this.string(this.u16(), false);
      case 0xdb:
        return this.pos + 4 > this.end ? NOT_PLAIN : this.string(this.u32(), false);
      case 0xdc:
        return this.pos + 2 > this.end ? NOT_PLAIN : this.array(this.u16(), level);
      case 0xdd:
        return this.pos + 4 > this.end ? NOT_PLAIN : this.array(this.u32(), level);
      case 0xde:
        return this.pos + 2 > this.end ? NOT_PLAIN : this.map(this.u16(), level);
      case 0xdf:
        return this.pos + 4 > this.end ? NOT_PLAIN : this.map(this.u32(), level);
      default:
        // Extensions, 64-bit integers and 0xc1: the general decoder's.
        return NOT_PLAIN;
    }
  }

  private u16(): number {
    const b = this.bytes;
    const v = ((b[this.pos] as number) << 8) | (b[this.pos + 1] as number);
    this.pos += 2;
    return v;
  }

  private u32(): number {
    const v = this.bytes.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  private array(size: number, level: number): unknown {
    if (size === 0) return [];
    if (size > this.limits.maxArrayLength || level > this.limits.maxDepth + this.extraDepth) return NOT_PLAIN;
    // Each element takes at least a byte: a size past the input is truncated, not a reason to allocate.
    if (size > this.end - this.pos) return NOT_PLAIN;
    const items = new Array<unknown>(size);
    for (let i = 0; i < size; i++) {
      const item = this.value(level + 1);
      // The only symbol value() returns is NOT_PLAIN (MessagePack has none). A
      // typeof test, where === between an object and a symbol had no type
      // feedback to specialise on and called V8's StrictEqual per item.
      if (typeof item === "symbol") return NOT_PLAIN;
      items[i] = item;
    }
    return items;
  }

  private map(size: number, level: number): unknown {
    if (size === 0) return {};
    if (size > this.limits.maxMapLength || level > this.limits.maxDepth + this.extraDepth) return NOT_PLAIN;
    if (size * 2 > this.end - this.pos) return NOT_PLAIN;
    if (size <= MAX_SHAPE_KEYS) return this.smallMap(size, level);
    const object: Record<string, unknown> = {};
    for (let i = 0; i < size; i++) {
      const key = this.key();
      if (key === NOT_PLAIN) return NOT_PLAIN;
      const value = this.value(level + 1);
      if (value === NOT_PLAIN) return NOT_PLAIN;
      object[key as string] = value;
    }
    return object;
  }

  /**
   * A map of up to {@link MAX_SHAPE_KEYS} keys, read whole into locals (no
   * scratch array, whose stores would each pay a write barrier), then built
   * by its key sequence's maker once it has one. Unrolled: a loop storing
   * into the locals through a switch cost 1.5% more per streamed item.
   * The level's reader (see {@link MapReaders}) is tried first; a key
   * sequence with a maker gets a reader of the bytes its keys came in.
   */
  private smallMap(size: number, level: number): unknown {
    const reader = this.readers.readerAt(level);
    const start = this.pos;
    if (reader !== undefined && reader.size === size) {
      const object = reader.read(this, level);
      // typeof first, as in array(): an object is the common result.
      if (typeof object !== "symbol" || object !== MISS) return object;
      this.pos = start;
    }
    const shapes = this.shapes;
    let shape: ShapeNode | undefined = shapes.root;
    const k0 = this.key();
    if (k0 === NOT_PLAIN) return NOT_PLAIN;
    // Where each key ended, for a reader made from these bytes (the next key starts after the value).
    const e0 = this.pos;
    shape = shapes.next(shape, k0 as MapKey);
    const v0 = this.value(level + 1);
    if (v0 === NOT_PLAIN) return NOT_PLAIN;
    let k1: unknown, v1: unknown, k2: unknown, v2: unknown, k3: unknown, v3: unknown;
    let s1 = 0,
      e1 = 0,
      s2 = 0,
      e2 = 0,
      s3 = 0,
      e3 = 0;
    if (size > 1) {
      s1 = this.pos;
      k1 = this.key();
      if (k1 === NOT_PLAIN) return NOT_PLAIN;
      e1 = this.pos;
      if (shape !== undefined) shape = shapes.next(shape, k1 as MapKey);
      v1 = this.value(level + 1);
      if (v1 === NOT_PLAIN) return NOT_PLAIN;
      if (size > 2) {
        s2 = this.pos;
        k2 = this.key();
        if (k2 === NOT_PLAIN) return NOT_PLAIN;
        e2 = this.pos;
        if (shape !== undefined) shape = shapes.next(shape, k2 as MapKey);
        v2 = this.value(level + 1);
        if (v2 === NOT_PLAIN) return NOT_PLAIN;
        if (size > 3) {
          s3 = this.pos;
          k3 = this.key();
          if (k3 === NOT_PLAIN) return NOT_PLAIN;
          e3 = this.pos;
          if (shape !== undefined) shape = shapes.next(shape, k3 as MapKey);
          v3 = this.value(level + 1);
          if (v3 === NOT_PLAIN) return NOT_PLAIN;
        }
      }
    }
    const maker = shape === undefined ? undefined : shapes.maker(shape);
    if (maker !== undefined) {
      // A common key sequence: its level tries the reader of these key bytes first from now on.
      const node = shape as ShapeNode;
      if (node.reader === undefined && this.readers.canMake(level)) {
        const names = [String(k0), String(k1), String(k2), String(k3)].slice(0, size);
        node.reader = this.readers.make(this.bytes, [start, e0, s1, e1, s2, e2, s3, e3], names);
      }
      const made = node.reader;
      if (made !== null && made !== undefined && made !== reader) this.readers.use(level, made);
      return maker(v0, v1, v2, v3);
    }
    // Assigned in key order: the same object as assigning each as it is read.
    const object: Record<string, unknown> = {};
    object[k0 as string] = v0;
    if (size > 1) object[k1 as string] = v1;
    if (size > 2) object[k2 as string] = v2;
    if (size > 3) object[k3 as string] = v3;
    return object;
  }

  /** A map key: a string (or number, which becomes a property name); anything else, and `__proto__`, is the general decoder's to refuse. */
  private key(): unknown {
    if (this.pos >= this.end) return NOT_PLAIN;
    const head = this.bytes[this.pos] as number;
    let key: unknown;
    if (head >= 0xa0 && head < 0xc0) {
      this.pos++;
      key = this.string(head - 0xa0, true);
    } else {
      key = this.value(Number.POSITIVE_INFINITY);
      if (typeof key !== "string" && typeof key !== "number") return NOT_PLAIN;
    }
    return key === "__proto__" ? NOT_PLAIN : key;
  }

  private string(length: number, isKey: boolean): unknown {
    if (length > this.limits.maxStrLength || this.pos + length > this.end) return NOT_PLAIN;
    const start = this.pos;
    this.pos += length;
    if (isKey && length <= MAX_CACHED_KEY && length > 0) return this.cachedKey(start, length);
    if (length <= 24) return this.ascii(start, length) ?? this.utf8(start, length);
    return this.utf8(start, length);
  }

  /**
   * Short ASCII text built four characters at a time, or undefined if a byte
   * is not ASCII. One string per character, as before, took half again as
   * many instructions (callgrind); up to 24 bytes this is still no more than
   * Buffer's UTF-8 decoding, a call into C++ that costs the same at any
   * short length.
   */
  private ascii(start: number, length: number): string | undefined {
    const b = this.bytes;
    const end = start + length;
    let high = 0;
    for (let i = start; i < end; i++) high |= b[i] as number;
    if (high >= 0x80) return undefined;
    let text = "";
    let i = start;
    for (; i + 4 <= end; i += 4) text += fromCharCode(b[i] as number, b[i + 1] as number, b[i + 2] as number, b[i + 3] as number);
    switch (end - i) {
      case 1:
        return text + fromCharCode(b[i] as number);
      case 2:
        return text + fromCharCode(b[i] as number, b[i + 1] as number);
      case 3:
        return text + fromCharCode(b[i] as number, b[i + 1] as number, b[i + 2] as number);
      default:
        return text;
    }
  }

  /**
   * UTF-8 text; invalid UTF-8 is left to the general decoder, which keeps
   * what it can of it (a lone surrogate comes back as it was sent) where
   * Buffer would put U+FFFD.
   */
  private utf8(start: number, length: number): unknown {
    const b = this.bytes;
    return isUtf8(b.subarray(start, start + length)) ? utf8Slice.call(b, start, start + length) : NOT_PLAIN;
  }

  private cachedKey(start: number, length: number): unknown {
    const b = this.bytes;
    let bucket = this.keys[length];
    if (bucket !== undefined) {
      search: for (let k = 0; k < bucket.length; k++) {
        const cached = bucket[k] as CachedKey;
        const bytes = cached.bytes;
        for (let i = 0; i < length; i++) if (bytes[i] !== b[start + i]) continue search;
        return cached.text;
      }
    } else bucket = this.keys[length] = [];
    const text = this.utf8(start, length);
    if (text === NOT_PLAIN) return NOT_PLAIN;
    if (bucket.length < KEYS_PER_LENGTH)
      bucket.push({ bytes: Uint8Array.prototype.slice.call(b, start, start + length), text: text as string });
    return text;
  }

  private binary(size: number): unknown {
    if (size > this.limits.maxBinLength || this.pos + size > this.end) return NOT_PLAIN;
    const start = this.pos;
    this.pos += size;
    // A view of the input, as the general decoder gives.
    return this.input.subarray(start, start + size);
  }
}
