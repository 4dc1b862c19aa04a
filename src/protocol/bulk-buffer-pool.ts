/** Granularity of the sizes the pool allocates, so messages of nearby sizes reuse one another's buffers. */
const ROUND = 64 * 1024;

/** Buffers at least this large come from the pool (a smaller one is cheap to allocate anew); every buffer the pool hands out is. */
export const POOLED_MIN_BYTES = ROUND;

/** Limits of a {@link BulkBufferPool}. */
export interface BulkBufferPoolOptions {
  /** Most bytes kept free for reuse, all buffers together. Default 16 MiB. */
  maxBytes?: number;
  /** Most buffers kept free. Default 8. */
  maxBuffers?: number;
}

/**
 * Buffers of large outgoing messages, kept for the next one once the socket
 * has taken every byte of the last. Writing into memory just allocated costs
 * the kernel a page fault per 4 KiB: a 4 MiB copy into a new buffer took
 * about 3x as long as the same copy into one used before. One pool serves
 * all connections of a process, so what it keeps is bounded per process,
 * not per connection.
 *
 * A buffer handed out is the caller's until it gives it back with
 * {@link give}, once and only once nothing refers to its bytes any more.
 */
export class BulkBufferPool {
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;
  private readonly maxBytes: number;
  private readonly maxBuffers: number;

  constructor(options: BulkBufferPoolOptions = {}) {
    this.maxBytes = options.maxBytes ?? 16 * 1024 * 1024;
    this.maxBuffers = options.maxBuffers ?? 8;
  }

  /** Bytes kept free, all buffers together. */
  get bytes(): number {
    return this.freeBytes;
  }

  /** Buffers kept free. */
  get count(): number {
    return this.free.length;
  }

  /**
   * A buffer of at least `size` bytes (contents undefined) over the whole of
   * memory of its own, at least {@link POOLED_MIN_BYTES}: the smallest free
   * one that fits, if it is at most about twice `size` (so a small message
   * does not hold a large buffer), else a new one.
   */
  take(size: number): Buffer {
    const free = this.free;
    let best = -1;
    for (let i = 0; i < free.length; i++) {
      const length = (free[i] as ArrayBuffer).byteLength;
      if (length >= size && length <= 2 * size + ROUND && (best < 0 || length < (free[best] as ArrayBuffer).byteLength)) best = i;
    }
    // allocUnsafeSlow: memory of its own, not zero-filled first (zero-filling made
    // large copies about twice as slow).
    if (best < 0) return Buffer.allocUnsafeSlow(Math.max(1, Math.ceil(size / ROUND)) * ROUND);
    const memory = free[best] as ArrayBuffer;
    free[best] = free[free.length - 1] as ArrayBuffer;
    free.pop();
    this.freeBytes -= memory.byteLength;
    return Buffer.from(memory);
  }

  /**
   * Gives back the memory of a buffer from {@link take}. It is kept if it
   * fits the pool's limits, else left to the garbage collector.
   */
  give(memory: ArrayBuffer): void {
    // Memory the pool cannot have made (a slice of Node's shared buffer pool
    // among them) is never kept: reusing it would overwrite other buffers.
    if (memory.byteLength < ROUND || memory.byteLength % ROUND !== 0) return;
    if (this.free.length >= this.maxBuffers || this.freeBytes + memory.byteLength > this.maxBytes) return;
    this.free.push(memory);
    this.freeBytes += memory.byteLength;
  }
}

/** The pool every {@link FrameWriter} of the process uses unless given another. */
export const bulkBuffers = new BulkBufferPool();
