import assert from "node:assert/strict";
import { type Socket, createServer } from "node:net";
import { describe, it } from "node:test";
import { encode } from "@msgpack/msgpack";
import { Client } from "../../src/client/index.js";
import { readCallPayload } from "../../src/protocol/call-payload.js";
import { FrameType } from "../../src/protocol/frame.js";
import { FrameDecoder } from "../../src/protocol/frame-decoder.js";
import { MsgpackCodec } from "../../src/protocol/msgpack-codec.js";
import { RAW_LIMITS, frame, rejectsWith, within } from "../integration/helpers.js";

/** What the scripted server does with a CALL on its nth connection (0-based). */
type Script = (connection: number, streamId: number, socket: Socket) => void;

interface FakeServer {
  address: string;
  calls: Array<{ connection: number; streamId: number; method: string }>;
  close(): Promise<void>;
}

/** A server speaking just enough of the protocol to answer HELLO and follow a script for CALLs. */
async function fakeServer(script: Script): Promise<FakeServer> {
  const calls: FakeServer["calls"] = [];
  const sockets: Socket[] = [];
  const codec = new MsgpackCodec();
  const server = createServer((socket) => {
    const connection = sockets.length;
    sockets.push(socket);
    socket.on("error", () => {});
    const decoder = new FrameDecoder(
      {
        onFrame(type, _flags, streamId, payload) {
          if (type === FrameType.HELLO) {
            socket.write(frame(FrameType.WELCOME, 0, 0, encode({ version: 1, connectionId: `fake-${connection}`, limits: RAW_LIMITS })));
          } else if (type === FrameType.CALL) {
            calls.push({ connection, streamId, method: readCallPayload(codec, payload).head[0] });
            script(connection, streamId, socket);
          }
        },
      },
      { maxFrameSize: 1024 * 1024 },
    );
    socket.on("data", (chunk: Buffer) => decoder.push(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    address: `127.0.0.1:${port}`,
    calls,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const goaway = (lastStreamId: number): Buffer => frame(FrameType.GOAWAY, 0, 0, encode([lastStreamId, "UNAVAILABLE", "draining"]));
const result = (streamId: number, value: unknown): Buffer => frame(FrameType.RESULT, 0, streamId, encode(value));

describe("calls refused by GOAWAY", () => {
  it("are retried once, transparently, on a new connection", async () => {
    const fake = await fakeServer((connection, streamId, socket) => {
      if (connection === 0) socket.write(goaway(0));
      else socket.write(result(streamId, `answered on connection ${connection}`));
    });
    const client = new Client(fake.address, { keepalive: false, timeout: 5000 });
    try {
      assert.equal(await within(client.call("echo", ["x"]), 3000, "retried call"), "answered on connection 1");
      assert.deepEqual(
        fake.calls.map((c) => c.connection),
        [0, 1],
      );
      assert.equal(client.connectionId, "fake-1");
    } finally {
      await client.close();
      await fake.close();
    }
  });

  it("are retried only once", async () => {
    const fake = await fakeServer((_connection, _streamId, socket) => socket.write(goaway(0)));
    const client = new Client(fake.address, { keepalive: false, reconnect: { initialDelay: 5 } });
    try {
      await within(rejectsWith(client.call("echo", ["x"]), "UNAVAILABLE", /not processed/), 3000, "refused twice");
      assert.equal(fake.calls.length, 2);
    } finally {
      await client.close();
      await fake.close();
    }
  });

  it("are not retried when the GOAWAY covers them (the server may have run them)", async () => {
    const fake = await fakeServer((_connection, streamId, socket) => {
      // Promises an answer for this stream, then dies without giving it.
      socket.write(goaway(streamId));
      setTimeout(() => socket.destroy(), 20);
    });
    const client = new Client(fake.address, { keepalive: false, reconnect: { initialDelay: 5 } });
    try {
      await within(rejectsWith(client.call("echo", ["x"]), "UNAVAILABLE"), 3000, "lost call");
      assert.equal(fake.calls.length, 1);
    } finally {
      await client.close();
      await fake.close();
    }
  });

  it("keep their deadline across the retry", async () => {
    // The second connection never answers: the retried call must still end at its deadline.
    const fake = await fakeServer((connection, _streamId, socket) => {
      if (connection === 0) socket.write(goaway(0));
    });
    const client = new Client(fake.address, { keepalive: false });
    try {
      const started = performance.now();
      await within(rejectsWith(client.call("echo", ["x"], { timeout: 300 }), "DEADLINE_EXCEEDED", /deadline of 300 ms/), 3000, "deadline");
      assert.ok(performance.now() - started < 2000);
      assert.equal(fake.calls.length, 2);
    } finally {
      await client.close();
      await fake.close();
    }
  });
});
