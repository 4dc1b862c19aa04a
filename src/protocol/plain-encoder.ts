/**
 * MessagePack encoding of plain values (nil, booleans, numbers, strings,
 * Uint8Array, arrays and plain objects), byte for byte what @msgpack/msgpack
 * writes for them, in a third of the time: the general encoder asks its
 * extension codec about every object and goes through a DataView for every
 * byte, which for the small values of calls and stream items was most of
 * the cost of sending them. Anything else (Date, BigInt, class instances,
 * other typed arrays, integers beyond 32 bits, nesting past the limit)
 * makes {@link PlainEncoder.encode} give up, and the caller encodes the
 * whole value with the general encoder instead. Short strings that recur
 * at one place are written from {@link StringSlots}, and maps of recurring
 * key sequences by {@link MapWriters}' compiled writers.
 */
import { POOLED_MIN_BYTES, bulkBuffers } from "./bulk-buffer-pool.js";
import { MAX_WRITER_KEYS, type MapTarget, MapWriters } from "./map-writers.js";
import { SLOT_BYTES, StringSlots } from "./string-slots.js";

/** String.prototype.isWellFormed (ES2024, in Node since 20). */
interface WellFormed {
  isWellFormed(): boolean;
}

export class PlainEncoder implements MapTarget {
  /** Where bytes go: the own buffer, or a caller's (see {@link encodeInto}). Public for {@link MapWriters}' writers, as are the next two. */
  buffer: Buffer;
  pos = 0;
  /** End of the room in `buffer`; the own buffer grows past it, a caller's does not. */
  limit: number;
  /** The buffer encode() writes to: `base`, or memory of {@link bulkBuffers} once a value outgrew it. */
  private own: Buffer;
  /** The first, small buffer: what `own` goes back to when a large one is handed over ({@link release}). */
  private readonly base: Buffer = Buffer.allocUnsafe(2048);
  private busy = false;
  /** Deepest level a value may sit at; the outermost value is level 1 (as the general encoder counts). */
  private readonly maxLevel: number;
  /** Encodings of the short strings that recur at the same place of successive values. */
  private readonly slots = new StringSlots();
  /** Writers of the maps of common key sequences. */
  private readonly writers = new MapWriters();

  /** `maxLevel`: the general encoder's `maxDepth`, so both refuse the same values. */
  constructor(maxLevel: number) {
    this.maxLevel = maxLevel;
    this.own = this.base;
    this.buffer = this.own;
    this.limit = this.own.length;
  }

  /**
   * Encodes `value` into this encoder's buffer and returns a view of it, valid
   * until the next call; undefined when the value holds anything but plain
   * data (nothing useful is left in the buffer then).
   */
  encode(value: unknown): Uint8Array | undefined {
    if (this.busy) return undefined;
    this.busy = true;
    this.buffer = this.own;
    this.limit = this.own.length;
    this.pos = 0;
    try {
      return this.write(value, 1) ? this.buffer.subarray(0, this.pos) : undefined;
    } finally {
      // Grown while encoding: keep the larger buffer.
      this.own = this.buffer;
      this.busy = false;
    }
  }

  /**
   * Encodes `value` straight into `target` from `offset`, using no byte at or
   * past `end`, and returns the number of bytes written: no view and no copy,
   * for a sender that has room in its outgoing buffer. Returns -1 when the
   * value is not plain data or does not fit (room is checked with each
   * value's largest header, so it may give up up to 9 bytes before `end`);
   * the bytes from `offset` on are then garbage. Bytes between the end of
   * the encoding and `end` may be overwritten either way.
   */
  encodeInto(value: unknown, target: Buffer, offset: number, end: number): number {
    // A getter or proxy trap that encodes while this encoder is busy gets the
    // general encoder, which copes with re-entry.
    if (this.busy) return -1;
    this.busy = true;
    this.buffer = target;
    this.limit = end;
    this.pos = offset;
    try {
      // A stream's items, usually plain objects, go straight to map(): this
      // check sees only values given here, where write() sees every nested
      // value and ends up generic (about 100 instructions per item more,
      // counted for a stream of {seq, value} objects).
      const object =
        typeof value === "object" && value !== null && this.maxLevel >= 1 && !Array.isArray(value) && !ArrayBuffer.isView(value);
      return (object ? this.map(value as Record<string, unknown>, 1) : this.write(value, 1)) ? this.pos - offset : -1;
    } finally {
      this.buffer = this.own;
      this.busy = false;
    }
  }

  private write(value: unknown, level: number): boolean {
    if (level > this.maxLevel) return false;
    // typeof tests, not a switch on typeof: each is a type check to the
    // optimizing compiler, where the switch called a builtin for the type
    // name; objects first, as most values here are the entries of maps and
    // arrays. ArrayBuffer.isView is a type check too, where instanceof
    // walked the prototype chain of every object.
    if (typeof value === "object") {
      if (value === null) return this.byte(0xc0);
      if (Array.isArray(value)) return this.array(value, level);
      if (ArrayBuffer.isView(value) && value instanceof Uint8Array) return this.binary(value);
      return this.map(value as Record<string, unknown>, level);
    }
    if (typeof value === "number") return this.number(value);
    if (typeof value === "string") return this.string(value);
    if (typeof value === "boolean") return this.byte(value ? 0xc3 : 0xc2);
    if (value === undefined) return this.byte(0xc0);
    return false;
  }

  private byte(b: number): boolean {
    if (!this.ensure(1)) return false;
    this.buffer[this.pos++] = b;
    return true;
  }

  private number(n: number): boolean {
    if (!this.ensure(9)) return false;
    const b = this.buffer;
    let p = this.pos;
    if (Number.isSafeInteger(n)) {
      if (n >= 0) {
        if (n < 0x80) b[p++] = n;
        else if (n < 0x100) {
          b[p++] = 0xcc;
          b[p++] = n;
        } else if (n < 0x10000) {
          b[p++] = 0xcd;
          b[p++] = n >>> 8;
          b[p++] = n & 0xff;
        } else if (n < 0x1_0000_0000) {
          // Byte by byte: Buffer's writeUInt32BE is a call that is not inlined here.
          b[p] = 0xce;
          b[p + 1] = n >>> 24;
          b[p + 2] = (n >>> 16) & 0xff;
          b[p + 3] = (n >>> 8) & 0xff;
          b[p + 4] = n & 0xff;
          p += 5;
        } else return false;
      } else if (n >= -0x20) b[p++] = 0xe0 | (n + 0x20);
      else if (n >= -0x80) {
        b[p++] = 0xd0;
        b[p++] = n & 0xff;
      } else if (n >= -0x8000) {
        b[p++] = 0xd1;
        b[p++] = (n >> 8) & 0xff;
        b[p++] = n & 0xff;
      } else if (n >= -0x8000_0000) {
        b[p++] = 0xd2;
        b.writeInt32BE(n, p);
        p += 4;
      } else return false;
    } else {
      b[p++] = 0xcb;
      b.writeDoubleBE(n, p);
      p += 8;
    }
    this.pos = p;
    return true;
  }

  private string(s: string): boolean {
    const length = s.length;
    // Short ASCII, the usual key or value, is written a character at a time;
    // anything else is measured and written by Buffer as UTF-8.
    if (length < 32) {
      if (!this.ensure(1 + length)) return false;
      const b = this.buffer;
      const start = this.pos + 1;
      let i = 0;
      for (; i < length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        b[start + i] = c;
      }
      if (i === length) {
        b[this.pos] = 0xa0 + length;
        this.pos = start + length;
        return true;
      }
    }
    // A lone surrogate is left to the general encoder, which keeps it (as
    // three bytes) where UTF-8 would turn it into U+FFFD.
    if (!(s as string & WellFormed).isWellFormed()) return false;
    const bytes = Buffer.byteLength(s, "utf8");
    if (!this.ensure(5 + bytes)) return false;
    const b = this.buffer;
    let p = this.pos;
    if (bytes < 32) b[p++] = 0xa0 + bytes;
    else p = lengthHeader(b, p, bytes, 0xd9);
    this.pos = p + b.write(s, p, "utf8");
    return true;
  }

  private binary(bytes: Uint8Array): boolean {
    const size = bytes.length;
    if (!this.ensure(5 + size)) return false;
    const b = this.buffer;
    const p = lengthHeader(b, this.pos, size, 0xc4);
    b.set(bytes, p);
    this.pos = p + size;
    return true;
  }

  /** A string in a map or array, at the place `slot` (see {@link StringSlots}). */
  private placedString(s: string, slot: number): boolean {
    if (this.ensure(SLOT_BYTES)) {
      const n = this.slots.write(s, slot, this.buffer, this.pos);
      if (n !== 0) {
        this.pos += n;
        return true;
      }
    }
    const at = this.pos;
    if (!this.string(s)) return false;
    this.slots.learn(s, slot, this.buffer, at, this.pos - at);
    return true;
  }

  /**
   * Writes the value at `position` of a map at `level`: a string through
   * its place's slot (see {@link StringSlots}), anything else one level
   * deeper. Also what {@link MapWriters}' writers write values with.
   */
  placedValue(value: unknown, level: number, position: number): boolean {
    return typeof value === "string" && level < this.maxLevel
      ? this.placedString(value, StringSlots.slot(level, position, true))
      : this.write(value, level + 1);
  }

  /** A DataView over all of `buffer`, for {@link MapWriters}' writers (the slots keep one per buffer). */
  viewOf(buffer: Buffer): DataView {
    return this.slots.viewFor(buffer);
  }

  private array(items: unknown[], level: number): boolean {
    if (!this.header(items.length, 0x90, 0xdc)) return false;
    // A string item is checked against the level first, as write() would;
    // written out rather than through placedValue(), which cost a short
    // array about 14% more instructions (callgrind).
    const inner = level < this.maxLevel;
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (!(typeof item === "string" && inner ? this.placedString(item, StringSlots.slot(level, i, true)) : this.write(item, level + 1))) {
        return false;
      }
    }
    return true;
  }

  private map(object: Record<string, unknown>, level: number): boolean {
    // Only plain objects: anything with a prototype of its own may be a Date,
    // a Map or an extension type, which the general encoder knows about.
    // A property load first: it makes the optimizing compiler check the
    // object's hidden class, from which it then knows the prototype. Without
    // it getPrototypeOf was a call into the runtime for every object (about
    // a tenth of encoding a small object, counted in instructions).
    void object.constructor;
    const proto: unknown = Object.getPrototypeOf(object);
    if (proto !== Object.prototype && proto !== null) return false;
    // for-in walks V8's cached key list where Object.keys copies it into a
    // new array: a third less time for a small object, and no garbage. It
    // visits the same keys in the same order unless Object.prototype has an
    // enumerable property of its own (checked), and the count is only known
    // at the end, so the header is written after the entries (moved along
    // for 16 entries or more, which need a longer header).
    const inner = level < this.maxLevel;
    // A compiled writer checks the keys itself, inherited ones included.
    const writer = inner ? this.writers.writerAt(level) : undefined;
    if (writer !== undefined) {
      const at = this.pos;
      if (writer(this, object, level)) return true;
      this.pos = at;
    }
    if (proto !== null && inheritsEnumerable()) return false;
    if (!this.ensure(1)) return false;
    const start = this.pos++;
    // The level's last key sequence: compared with this map's keys, and replaced by them where they differ.
    const learnt = inner ? this.writers.keysAt(level) : undefined;
    let same = true;
    let count = 0;
    for (const key in object) {
      if (learnt !== undefined && learnt[count] !== key) {
        if (count < MAX_WRITER_KEYS) learnt[count] = key;
        same = false;
      }
      if (!this.placedString(key, StringSlots.slot(level, count, false)) || !this.placedValue(object[key], level, count)) return false;
      count++;
    }
    if (learnt !== undefined) this.writers.learned(level, count, same);
    if (count < 16) {
      this.buffer[start] = 0x80 + count;
      return true;
    }
    const end = this.pos;
    const wide = count < 0x10000 ? 2 : 4;
    if (!this.ensure(wide)) return false;
    this.buffer.copyWithin(start + 1 + wide, start + 1, end);
    this.pos = start;
    this.header(count, 0x80, 0xde);
    this.pos = end + wide;
    return true;
  }

  /** An array or map header: fix form, 16-bit (`wide`) or 32-bit (`wide` + 1). */
  private header(size: number, fix: number, wide: number): boolean {
    if (!this.ensure(5)) return false;
    const b = this.buffer;
    if (size < 16) b[this.pos++] = fix + size;
    else if (size < 0x10000) {
      b[this.pos] = wide;
      b[this.pos + 1] = size >>> 8;
      b[this.pos + 2] = size & 0xff;
      this.pos += 3;
    } else {
      b[this.pos] = wide + 1;
      b.writeUInt32BE(size, this.pos + 1);
      this.pos += 5;
    }
    return true;
  }

  /**
   * Hands over the memory of a large encoding: when `view` is what the last
   * {@link encode} returned and lies in memory of {@link bulkBuffers}, the
   * caller owns that memory from now on (and gives it back to the pool once
   * done with it), and this encoder goes back to its small buffer. A large
   * message is then sent from where it was encoded, not from a copy. False,
   * changing nothing, for any other view.
   */
  release(view: Uint8Array): boolean {
    // Only pooled memory: a smaller buffer grown past `base` is not the pool's.
    if (this.busy || this.own.length < POOLED_MIN_BYTES || view.buffer !== this.own.buffer) return false;
    this.own = this.base;
    this.buffer = this.base;
    this.limit = this.base.length;
    return true;
  }

  /** Room for `n` more bytes: the own buffer grows; a caller's buffer has what it has. */
  private ensure(n: number): boolean {
    if (this.pos + n <= this.limit) return true;
    if (this.buffer !== this.own) return false;
    // Large buffers come from the pool, warm (see BulkBufferPool); a value
    // that needs much more room at once (a large binary) gets what it needs,
    // not a doubling, so its bytes are copied once.
    const size = Math.max(this.own.length * 2, this.pos + n);
    const larger = size >= POOLED_MIN_BYTES ? bulkBuffers.take(size) : Buffer.allocUnsafe(size);
    this.own.copy(larger, 0, 0, this.pos);
    // The outgrown buffer holds nothing anyone may still read (views of an
    // earlier encoding are valid only until the next one).
    if (this.own !== this.base && this.own.length >= POOLED_MIN_BYTES) bulkBuffers.give(this.own.buffer as ArrayBuffer);
    this.own = larger;
    this.buffer = larger;
    this.limit = larger.length;
    return true;
  }
}

/** A plain object, whose for-in visits what Object.prototype has that is enumerable. */
const EMPTY: object = {};

/** Whether Object.prototype has been given an enumerable property, which for-in over a plain object would visit. */
function inheritsEnumerable(): boolean {
  for (const _ in EMPTY) return true;
  return false;
}

/**
 * A str or bin header with an 8-, 16- or 32-bit length: `first` is the
 * 8-bit form's type byte (0xd9 str 8, 0xc4 bin 8), the next two the wider
 * forms'. Returns where the content starts.
 */
function lengthHeader(b: Buffer, p: number, size: number, first: number): number {
  if (size < 0x100) {
    b[p] = first;
    b[p + 1] = size;
    return p + 2;
  }
  if (size < 0x10000) {
    b[p] = first + 1;
    b[p + 1] = size >>> 8;
    b[p + 2] = size & 0xff;
    return p + 3;
  }
  b[p] = first + 2;
  b.writeUInt32BE(size, p + 1);
  return p + 5;
}
