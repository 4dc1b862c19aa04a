/** Slots: 4 nesting levels x 8 positions x (key, value). */
const SLOTS = 64;
/** Bytes of one slot's encoding: four 32-bit words. */
export const SLOT_BYTES = 16;
/** Longest string a slot remembers (a longer one cannot encode in {@link SLOT_BYTES}). */
const MAX_CHARS = SLOT_BYTES - 1;

/**
 * The MessagePack encodings of short strings that recur at the same place
 * of successive values: the keys of a stream's items, and values such as a
 * status or a type name. {@link PlainEncoder} gives each place (nesting
 * level, position, key or value) a slot; a string met in its slot twice in
 * a row is learnt, and from then on its encoding is written as up to four
 * 32-bit stores through a DataView. Written a character at a time, a
 * 4-character string cost about as much as the rest of a small item's
 * encoding (counted in instructions: `{seq, value: "item"}` went from about
 * 1,420 to 990). A string seen once is only remembered (one comparison and
 * one store), so places whose strings never repeat cost next to nothing.
 *
 * Strings are recognised by identity, which for keys and literals (interned
 * by the engine) is what recurs; an equal string built anew is a miss, never
 * a wrong encoding. Holds at most 64 strings of up to 15 characters, and
 * the buffer it last wrote to (a DataView over it; others' views are held
 * weakly).
 */
export class StringSlots {
  private readonly strings: (string | undefined)[] = new Array<string | undefined>(SLOTS).fill(undefined);
  /** Bytes of each slot's learnt encoding; 0 while it is only remembered. */
  private readonly lengths = new Uint8Array(SLOTS);
  private readonly words = new Int32Array(SLOTS * 4);
  /** Views of the buffers written to: one per buffer, kept no longer than it. */
  private readonly views = new WeakMap<Uint8Array, DataView>();
  private view: DataView | undefined;
  private viewOf: Uint8Array | undefined;

  /** The slot of a key (`value`: of the value after it) at `position` of a map or array at nesting `level`. */
  static slot(level: number, position: number, value: boolean): number {
    return ((level & 3) << 4) | ((position & 7) << 1) | (value ? 1 : 0);
  }

  /**
   * Writes the encoding learnt for `s` in `slot` into `target` at `at` and
   * returns its length; 0, writing nothing, when the slot has not learnt
   * `s`. Needs {@link SLOT_BYTES} bytes of room from `at` (it may write past
   * the encoding, within them).
   */
  write(s: string, slot: number, target: Uint8Array, at: number): number {
    if (s !== this.strings[slot]) return 0;
    const n = this.lengths[slot] as number;
    if (n === 0) return 0;
    const view = this.viewFor(target);
    const words = this.words;
    const q = slot << 2;
    view.setInt32(at, words[q] as number);
    if (n > 4) {
      view.setInt32(at + 4, words[q + 1] as number);
      if (n > 8) {
        view.setInt32(at + 8, words[q + 2] as number);
        if (n > 12) view.setInt32(at + 12, words[q + 3] as number);
      }
    }
    return n;
  }

  /**
   * After the caller wrote `s` (encoded, `length` bytes) into `target` at
   * `at`: learns it when `slot` last met it too, else remembers it in
   * `slot` for next time.
   */
  learn(s: string, slot: number, target: Uint8Array, at: number, length: number): void {
    if (s !== this.strings[slot]) {
      if (s.length > MAX_CHARS) return;
      this.strings[slot] = s;
      this.lengths[slot] = 0;
      return;
    }
    // Read as four whole words: the bytes past the encoding are never written out.
    if (length > SLOT_BYTES || at + SLOT_BYTES > target.length) return;
    const view = this.viewFor(target);
    const words = this.words;
    const q = slot << 2;
    words[q] = view.getInt32(at);
    words[q + 1] = view.getInt32(at + 4);
    words[q + 2] = view.getInt32(at + 8);
    words[q + 3] = view.getInt32(at + 12);
    this.lengths[slot] = length;
  }

  /** A DataView over all of `target`: made once per buffer, the last one at hand without a lookup. */
  viewFor(target: Uint8Array): DataView {
    // Encoders are shared by connections, each writing into buffers it
    // reuses (its outgoing slab, its streams' batches): a view is made once
    // per buffer, and the last one is at hand without a lookup.
    if (this.viewOf === target) return this.view as DataView;
    let view = this.views.get(target);
    if (view === undefined) {
      view = new DataView(target.buffer, target.byteOffset, target.byteLength);
      this.views.set(target, view);
    }
    this.view = view;
    this.viewOf = target;
    return view;
  }
}
