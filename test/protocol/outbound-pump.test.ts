import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ITEMS_PER_TURN, OutboundPump, type PumpSink } from "../../src/protocol/outbound-pump.js";

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
  it("pulls a sync source in a loop while there is credit, holding the first item past it", async () => {
    const sink = new RecordingSink();
    let pulls = 0;
    function* numbers(): Generator<number> {
      for (let i = 0; i < 10; i++) {
        pulls++;
        yield i;
      }
    }
    const pump = new OutboundPump(sink, numbers(), 4);
    const running = pump.run();
    // No await between the items: all four were sent before run() returned.
    assert.deepEqual(sink.items, [0, 1, 2, 3]);
    assert.equal(pulls, 5, "one item held");
    pump.grant(10);
    assert.deepEqual(sink.items, [0, 1, 2, 3], "the held item goes out after the grant's caller returns, not inside it");
    await running;
    assert.deepEqual(sink.items, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(sink.ended, 1);
  });

  it(`lets the event loop turn after every ${ITEMS_PER_TURN} items it sends, sync or async source, so I/O (CREDIT frames) is read meanwhile`, async () => {
    for (const source of [Array.from({ length: 3 * ITEMS_PER_TURN + 5 }, (_, i) => i), new CountingSource(3 * ITEMS_PER_TURN + 5)]) {
      const sink = new RecordingSink();
      const seen: number[] = [];
      // An immediate queued before the pump starts, and again each time it runs: where each ran shows where the pump let go.
      const watch = (): void => {
        seen.push(sink.items.length);
        if (sink.ended === 0 && seen.length < 10) setImmediate(watch);
      };
      setImmediate(watch);
      await new OutboundPump(sink, source, 1_000_000).run();
      assert.equal(sink.items.length, 3 * ITEMS_PER_TURN + 5);
      assert.equal(sink.ended, 1);
      assert.deepEqual(
        seen.slice(0, 3),
        [ITEMS_PER_TURN, 2 * ITEMS_PER_TURN, 3 * ITEMS_PER_TURN],
        Array.isArray(source) ? "array" : "async",
      );
    }
  });

  it("sends an array's items and ends it within run(), before any await", () => {
    const sink = new RecordingSink();
    void new OutboundPump(sink, ["a", "b"], 10).run();
    assert.deepEqual(sink.items, ["a", "b"]);
    assert.equal(sink.ended, 1);
  });

  it("adopts thenables that are not promises, as await would", async () => {
    const sink = new RecordingSink();
    let n = 0;
    const source = {
      [Symbol.asyncIterator]: () => ({
        next: () => ({
          then(resolve: (r: IteratorResult<number>) => void) {
            const value = n++;
            setImmediate(() => resolve(value < 3 ? { done: false, value } : { done: true, value: undefined }));
          },
        }),
      }),
    } as unknown as AsyncIterable<number>;
    await new OutboundPump(sink, source, 10).run();
    assert.deepEqual(sink.items, [0, 1, 2]);
    assert.equal(sink.ended, 1);
  });

  it("fails with the source's error when next() throws, rejects or returns no result object, and closes the source", async () => {
    const cases: Array<[string, () => unknown]> = [
      [
        "throws",
        () => {
          throw new Error("boom");
        },
      ],
      ["rejects", () => Promise.reject(new Error("boom"))],
      ["returns undefined", () => undefined],
      ["resolves to undefined", () => Promise.resolve(undefined)],
    ];
    for (const [name, next] of cases) {
      const sink = new RecordingSink();
      let returned = 0;
      const source = {
        [Symbol.iterator]: () => ({
          next,
          return: () => {
            returned++;
            return { done: true, value: undefined };
          },
        }),
      } as unknown as Iterable<unknown>;
      await new OutboundPump(sink, source, 10).run();
      assert.equal(sink.errors.length, 1, name);
      assert.ok(sink.errors[0] instanceof Error, name);
      if (name === "throws" || name === "rejects") assert.match((sink.errors[0] as Error).message, /boom/, name);
      else assert.ok(sink.errors[0] instanceof TypeError, `${name}: ${String(sink.errors[0])}`);
      assert.equal(sink.ended, 0, name);
      assert.equal(returned, 1, `${name}: return() called`);
    }
  });

  it("fails, closing the source, when an item cannot be sent, and pulls nothing more", async () => {
    const source = new CountingSource();
    const sink = new RecordingSink();
    sink.onItem = (value) => {
      if (value === 2) throw new Error("cannot encode");
    };
    await new OutboundPump(sink, source, 100).run();
    assert.equal(sink.errors.length, 1);
    assert.match((sink.errors[0] as Error).message, /cannot encode/);
    assert.equal(source.returned, true);
    assert.equal(source.pulls, 3);
  });

  it("settles run() when stopped while waiting for credit, and sends nothing after", async () => {
    const source = new CountingSource();
    const sink = new RecordingSink();
    const pump = new OutboundPump(sink, source, 0);
    const running = pump.run();
    await settle();
    assert.deepEqual(sink.items, [], "no credit: the first item is held");
    pump.stop();
    pump.grant(5);
    await running;
    await settle();
    assert.deepEqual(sink.items, []);
    assert.equal(source.returned, true);
    assert.equal(sink.ended, 0);
  });
});
