import { FRAME_HEADER_SIZE, FrameType, writeFrameHeader } from "./frame.js";

/** An ITEMS payload starts with a MessagePack array32 header: 0xdd, count:u32be. */
export const ITEMS_HEADER_SIZE = 5;
const ARRAY32 = 0xdd;
/** A new batch's buffer; it grows (x4) up to the batch's byte limit. */
const FIRST_SIZE = 256;

/**
 * Items of one stream waiting to leave together, as one ITEM frame (a lone
 * item) or one ITEMS frame (a MessagePack array of them). The items'
 * encodings sit back to back; the frame header and array header are written
 * when the batch goes into the outgoing buffer, so neither is rewritten as
 * items join.
 */
export class ItemBatch {
  readonly streamId: number;
  /** The items' encodings, from 0 to {@link used}. */
  bytes: Buffer;
  used = 0;
  count = 0;
  /** Most items this batch takes (fixed when it opens). */
  readonly limit: number;
  /** Written to the socket as soon as it is full, not at the end of the turn (a stream's first frames). */
  readonly eager: boolean;

  constructor(streamId: number, bytes: Buffer | undefined, limit: number, eager: boolean) {
    this.streamId = streamId;
    this.bytes = bytes ?? Buffer.allocUnsafe(FIRST_SIZE);
    this.limit = limit;
    this.eager = eager;
  }

  /** Bytes of the frame this batch becomes, header included. */
  get frameSize(): number {
    return FRAME_HEADER_SIZE + (this.count === 1 ? this.used : ITEMS_HEADER_SIZE + this.used);
  }

  /** Makes room for `n` more bytes of items, growing the buffer up to `cap` bytes of items. False when `n` does not fit in `cap`. */
  reserve(n: number, cap: number): boolean {
    const needed = this.used + n;
    if (needed <= this.bytes.length) return true;
    if (needed > cap) return false;
    const larger = Buffer.allocUnsafe(Math.min(cap, Math.max(needed, this.bytes.length * 4)));
    this.bytes.copy(larger, 0, 0, this.used);
    this.bytes = larger;
    return true;
  }

  /** Writes the batch as one frame into `target` at `at` ({@link frameSize} bytes). */
  writeFrame(target: Buffer, at: number): void {
    const used = this.used;
    if (this.count === 1) {
      writeFrameHeader(target, at, used, FrameType.ITEM, 0, this.streamId);
      this.bytes.copy(target, at + FRAME_HEADER_SIZE, 0, used);
      return;
    }
    writeFrameHeader(target, at, ITEMS_HEADER_SIZE + used, FrameType.ITEMS, 0, this.streamId);
    const payloadAt = at + FRAME_HEADER_SIZE;
    const count = this.count;
    target[payloadAt] = ARRAY32;
    target[payloadAt + 1] = count >>> 24;
    target[payloadAt + 2] = (count >>> 16) & 0xff;
    target[payloadAt + 3] = (count >>> 8) & 0xff;
    target[payloadAt + 4] = count & 0xff;
    this.bytes.copy(target, payloadAt + ITEMS_HEADER_SIZE, 0, used);
  }
}
