import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OutboundPump, type PumpSink } from "../../src/protocol/outbound-pump.js";

/** A source that counts its next() calls and notes return(), yielding 0, 1, 2, … up to `count` items. */
class CountingSource implements AsyncIterable<number> {
  pulls = 0;
  returned = false;
  nextAfterReturn = 0;
  constructor(private readonly count = Infinity) {}

  [Symbol.asyncIterator](): AsyncIterator<number> {
    return {
      next: async () => {
        if (this.returned) this.nextAfterReturn++;
        if (this.returned || this.pulls >= this.count) return { done: true, value: undefined };
        return { done: false, value: this.pulls++ };
      },
      return: async () => {
        this.returned = true;
        return { done: true, value: undefined };
      },
    };
  }
}

class RecordingSink implements PumpSink {
  readonly items: unknown[] = [];
  ended = 0;
  errors: unknown[] = [];
  onItem: ((value: unknown) => void) | undefined;
  item(value: unknown): void {
    this.items.push(value);
    this.onItem?.(value);
  }
  end(): void {
    this.ended++;
  }
  error(error: unknown): void {
    this.errors.push(error);
  }
}

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe("OutboundPump", () => {
  it("ends a source that used its credit exactly without waiting for more", async () => {
    const source = new CountingSource(3);
    const sink = new RecordingSink();
    await new OutboundPump(sink, source, 3).run();
    assert.deepEqual(sink.items, [0, 1, 2]);
    assert.equal(sink.ended, 1);
  });

  it("runs a source at most one item ahead of the credit, and sends it once credit comes", async () => {
    const source = new CountingSource();
    const sink = new RecordingSink();
    const pump = new OutboundPump(sink, source, 2);
    const running = pump.run();
    await settle();
    assert.deepEqual(sink.items, [0, 1]);
    assert.equal(source.pulls, 3, "one item held, none more pulled");
    pump.grant(1);
    await settle();
    assert.deepEqual(sink.items, [0, 1, 2]);
    assert.equal(source.pulls, 4);
    pump.stop();
    await running;
    assert.equal(source.returned, true);
    assert.deepEqual(sink.items, [0, 1, 2], "the held item is not sent after stop");
  });

  it("pulls nothing more once stopped while sending an item", async () => {
    const source = new CountingSource();
    const sink = new RecordingSink();
    const pump = new OutboundPump(sink, source, 100);
    sink.onItem = (value) => {
      if (value === 1) pump.stop();
    };
    await pump.run();
    assert.deepEqual(sink.items, [0, 1]);
    assert.equal(source.returned, true);
    assert.equal(source.nextAfterReturn, 0, "next() after return()");
    assert.equal(sink.ended, 0);
  });
});
