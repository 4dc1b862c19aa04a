/** The most methods an {@link ItemSizeMemory} remembers; the one remembered longest ago makes room. */
export const ITEM_SIZE_MEMORY_METHODS = 64;

/**
 * The average encoded size of the items of the last stream each method
 * sent, so that the next stream of that method can be granted, with its
 * CALL, the credit such items are given once they are measured (PROTOCOL.md
 * §5.8). Without it every stream of small items starts at one window and
 * its sender waits a round trip for the first grant; with 10,000-item
 * streams that wait was 3-5% of the stream's time (two processes on a busy
 * host).
 * Bounded to {@link ITEM_SIZE_MEMORY_METHODS} methods, as a peer's method
 * names are not.
 */
export class ItemSizeMemory {
  private readonly sizes = new Map<string, number>();

  /** The average item size `method`'s last stream had, or 0 when none is remembered. */
  get(method: string): number {
    return this.sizes.get(method) ?? 0;
  }

  /** Remembers `bytes` as `method`'s average item size (a stream that measured none, 0, is ignored). */
  remember(method: string, bytes: number): void {
    if (!(bytes > 0)) return;
    const sizes = this.sizes;
    if (sizes.get(method) === bytes) return;
    // Re-inserted, so the oldest entry is the one remembered longest ago.
    sizes.delete(method);
    if (sizes.size >= ITEM_SIZE_MEMORY_METHODS) sizes.delete(sizes.keys().next().value as string);
    sizes.set(method, bytes);
  }
}
