/** setTimeout's largest delay; a longer one fires after 1 ms (with a TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 0x7fff_ffff;

/**
 * A one-shot timer for any delay a call may have: timeouts go up to the CALL
 * head's uint32 (49.7 days), past setTimeout's 24.8-day range, so a long
 * delay is waited out in steps instead of expiring at once.
 */
export class LongTimer {
  private handle: NodeJS.Timeout | undefined;
  private readonly fn: () => void;

  constructor(ms: number, fn: () => void) {
    this.fn = fn;
    this.arm(ms);
  }

  clear(): void {
    clearTimeout(this.handle);
    this.handle = undefined;
  }

  private arm(left: number): void {
    const step = Math.min(left, MAX_TIMER_MS);
    this.handle = setTimeout(() => (left > step ? this.arm(left - step) : this.fn()), step);
  }
}
