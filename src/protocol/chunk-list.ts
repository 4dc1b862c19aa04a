/**
 * The parts of every empty list: a decoder that has never held bytes (an
 * idle connection's) keeps no array of its own. Frozen, so a push that
 * missed the swap in {@link ChunkList.push} fails loudly.
 */
const NO_PARTS: Buffer[] = Object.freeze([]) as unknown as Buffer[];

/**
 * Bytes received but not yet consumed, kept as the socket chunks they came
 * in (no copy on arrival), for the incremental decoders of frames and
 * records. Taking bytes that lie in the first chunk gives a view of it;
 * taking bytes that span chunks copies them once.
 */
export class ChunkList {
  /** Bytes held. */
  length = 0;
  /** Whether the last {@link take} copied (its result is a buffer of its own, not a view of a chunk). */
  copied = false;
  private parts = NO_PARTS;

  /** Chunks held: a decoder limits it, as a trickle of tiny chunks would make it grow without bound. */
  get count(): number {
    return this.parts.length;
  }

  push(chunk: Buffer): void {
    if (this.parts === NO_PARTS) this.parts = [chunk];
    else this.parts.push(chunk);
    this.length += chunk.length;
  }

  /** Removes `n` held bytes (at most {@link length}): a view when they lie in the first chunk, else one copy. */
  take(n: number): Buffer {
    const parts = this.parts;
    const first = parts[0] as Buffer;
    this.length -= n;
    this.copied = first.length < n;
    if (first.length >= n) {
      if (first.length === n) {
        parts.shift();
        return first;
      }
      parts[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const part = parts[0] as Buffer;
      const count = Math.min(part.length, n - filled);
      part.copy(out, filled, 0, count);
      filled += count;
      if (count === part.length) parts.shift();
      else parts[0] = part.subarray(count);
    }
    return out;
  }

  /** Bytes in the first chunk held (0 when empty): a take of more spans chunks. */
  get firstLength(): number {
    const first = this.parts[0];
    return first === undefined ? 0 : first.length;
  }

  /** Removes `n` held bytes (at most {@link length}) as views of the chunks they lie in, in order: no copy. */
  takeParts(n: number): Buffer[] {
    const parts = this.parts;
    const out: Buffer[] = [];
    this.length -= n;
    this.copied = false;
    let left = n;
    while (left > 0) {
      const part = parts[0] as Buffer;
      if (part.length <= left) {
        out.push(part);
        parts.shift();
        left -= part.length;
      } else {
        out.push(part.subarray(0, left));
        parts[0] = part.subarray(left);
        left = 0;
      }
    }
    return out;
  }

  /** Copies everything held to the start of a new buffer of `size` (≥ {@link length}) bytes and empties the list. */
  gather(size: number): Buffer {
    const target = Buffer.allocUnsafe(size);
    let filled = 0;
    for (const part of this.parts) {
      part.copy(target, filled);
      filled += part.length;
    }
    this.clear();
    return target;
  }

  /** Removes and returns every chunk held, in order (an empty list's array is shared: read it only). */
  drain(): readonly Buffer[] {
    const parts = this.parts;
    this.clear();
    return parts;
  }

  clear(): void {
    this.parts = NO_PARTS;
    this.length = 0;
  }
}
