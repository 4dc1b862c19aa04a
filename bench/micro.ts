/**
 * Micro-benchmark of rapt's frame layer with mitata, in its own process:
 * ns per frame to write headers, to queue and flush frames through a
 * FrameWriter (socket writes stubbed out), and to parse them with a
 * FrameDecoder from whole and from split chunks. MessagePack encoding and
 * decoding of a small CALL's head and arguments are measured next to them
 * for scale.
 */
import { do_not_optimize, measure } from "mitata";
import { FRAME_HEADER_SIZE, FrameDecoder, FrameType, FrameWriter, type FrameSocket, MsgpackCodec, writeFrameHeader } from "rapt/protocol";
import type { MicroCommands, MicroResult } from "./commands.js";
import { serve } from "./ipc.js";

const BATCH = 64;

/** A socket that accepts everything at once. */
const sink: FrameSocket = {
  write: () => true,
  cork: () => undefined,
  uncork: () => undefined,
  writableLength: 0,
  destroyed: false,
  on: () => undefined,
};

/** `count` frames of `size`-byte payloads back to back, as they would arrive. */
function frames(count: number, size: number): Buffer {
  const out = Buffer.alloc(count * (FRAME_HEADER_SIZE + size));
  for (let i = 0; i < count; i++) writeFrameHeader(out, i * (FRAME_HEADER_SIZE + size), size, FrameType.RESULT, 0, 2 * i + 1);
  return out;
}

interface Case {
  name: string;
  framesPerIteration: number;
  fn: () => void;
}

function cases(): Case[] {
  const header = Buffer.alloc(BATCH * FRAME_HEADER_SIZE);
  const small = Buffer.alloc(32, 7);
  const medium = Buffer.alloc(16 * 1024, 7);
  const writer = new FrameWriter(sink);
  let frameCount = 0;
  const decoder = new FrameDecoder(
    {
      onFrame: () => {
        frameCount++;
      },
    },
    { maxFrameSize: 1024 * 1024 },
  );
  const whole = frames(BATCH, 32);
  // The same bytes in 100-byte chunks: most frames straddle two chunks.
  const split: Buffer[] = [];
  for (let at = 0; at < whole.length; at += 100) split.push(whole.subarray(at, Math.min(at + 100, whole.length)));
  const codec = new MsgpackCodec();
  const head = ["bench.add"];
  const args = [123456, 1];
  const encodedArgs = Buffer.from(codec.encodeShared(args));
  return [
    {
      name: "writeFrameHeader",
      framesPerIteration: BATCH,
      fn: () => {
        for (let i = 0; i < BATCH; i++) writeFrameHeader(header, i * FRAME_HEADER_SIZE, 32, FrameType.CALL, 0, 2 * i + 1);
        do_not_optimize(header);
      },
    },
    {
      name: "FrameWriter.writeFrame 32 B + flush per 64",
      framesPerIteration: BATCH,
      fn: () => {
        for (let i = 0; i < BATCH; i++) writer.writeFrame(FrameType.CALL, 0, 2 * i + 1, small);
        writer.flush();
      },
    },
    {
      name: "FrameWriter.writeMessage 16 KiB + flush",
      framesPerIteration: 1,
      fn: () => {
        writer.writeMessage(FrameType.RESULT, 1, medium);
        writer.flush();
      },
    },
    {
      name: "FrameDecoder.push 64 x 32 B frames in one chunk",
      framesPerIteration: BATCH,
      fn: () => {
        decoder.push(whole);
        do_not_optimize(frameCount);
      },
    },
    {
      name: "FrameDecoder.push 64 x 32 B frames in 100 B chunks",
      framesPerIteration: BATCH,
      fn: () => {
        for (const chunk of split) decoder.push(chunk);
        do_not_optimize(frameCount);
      },
    },
    {
      name: "(scale) msgpack encode CALL head + args",
      framesPerIteration: 1,
      fn: () => {
        do_not_optimize(codec.encodeShared(head));
        do_not_optimize(codec.encodeShared(args));
      },
    },
    {
      name: "(scale) msgpack decode CALL args",
      framesPerIteration: 1,
      fn: () => {
        do_not_optimize(codec.decode(encodedArgs));
      },
    },
  ];
}

serve<MicroCommands>({
  async run({ quick }) {
    const results: MicroResult[] = [];
    for (const c of cases()) {
      const stats = await measure(c.fn, quick ? { min_cpu_time: 20 * 1e6, min_samples: 4 } : { min_cpu_time: 500 * 1e6 });
      results.push({
        name: c.name,
        framesPerIteration: c.framesPerIteration,
        nsPerFrame: stats.avg / c.framesPerIteration,
        p50NsPerFrame: stats.p50 / c.framesPerIteration,
        p99NsPerFrame: stats.p99 / c.framesPerIteration,
      });
    }
    return results;
  },
  exit: () => null,
});
