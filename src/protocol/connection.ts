import type { Socket } from "node:net";
import { FrameFlag, FrameType, MAX_STREAM_ID, PROCESSING_FLAGS, frameTypeName } from "./frame.js";
import { FrameDecoder, type FrameSink } from "./frame-decoder.js";
import { FrameWriter, type MessageBytes } from "./frame-writer.js";
import {
  HEARD,
  KeepaliveClock,
  type KeepaliveHost,
  type KeepaliveOptions,
  type KeepaliveSubject,
  pingPayload,
  rttOfPong,
  tickKeepalive,
} from "./keepalive.js";
import { MessageAssembler } from "./message-assembler.js";
import { type CodecLimits, DEFAULT_MAX_ARRAY_LENGTH, type MsgpackCodec, sharedCodec } from "./msgpack-codec.js";
import { ErrorCode, RpcError } from "./rpc-error.js";
import { encodeCredit } from "./credit.js";
import { ItemSizeMemory } from "./item-size-memory.js";
import type { ProcessorChain, RecordTransform } from "./processor.js";
import { RecordDecoder, type RecordSink } from "./record-decoder.js";
import { socketErrorReason } from "./socket-error.js";
import { DEFAULT_STREAM_WINDOW, type Limits, errorFromBody, errorToBody, parseGoaway } from "./wire-messages.js";

/** Largest frame accepted before the handshake has agreed on limits. */
export const HANDSHAKE_MAX_FRAME_SIZE = 64 * 1024;

/** Default limits a side announces and enforces. */
export const DEFAULT_LIMITS: Limits = {
  maxFrameSize: 1024 * 1024,
  maxMessageSize: 64 * 1024 * 1024,
  maxConcurrentStreams: 10_000,
  streamWindow: 256,
  maxBatchItems: 1024,
};

/** The states of a {@link Connection}. */
export const ConnectionState = {
  /** Waiting for HELLO (server) or WELCOME (client). */
  HANDSHAKE: 0,
  /** Streams may be opened. */
  OPEN: 1,
  /** GOAWAY sent or received: existing streams finish, no new ones. */
  DRAINING: 2,
  /** The socket is gone. */
  CLOSED: 3,
} as const;
/** One of the {@link ConnectionState} values. */
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

/** One open stream's receiving end, registered with {@link Connection.addStream}. */
export interface StreamReceiver {
  /** A complete (reassembled) message for this stream. */
  onMessage(type: number, payload: Buffer): void;
  /**
   * The stream ends without a message from the peer: connection lost, GOAWAY,
   * limit. `notProcessed` is true when the peer's GOAWAY guarantees it never
   * handed the stream to its application, so opening it again elsewhere is safe.
   */
  onReset(error: RpcError, notProcessed?: boolean): void;
}

/** The server or client code that drives a {@link Connection}. */
export interface ConnectionOwner {
  /** The first frame from the peer (HELLO, WELCOME or ERROR); answer with {@link Connection.open} or {@link Connection.fail}. */
  onHandshake(type: number, payload: Buffer): void;
  /** A complete CALL opening peer stream `streamId`. */
  onCall(streamId: number, payload: Buffer): void;
  /** The peer sent GOAWAY; local streams above `lastStreamId` were already reset. */
  onGoaway(lastStreamId: number, reason: RpcError): void;
  /** The connection is closed; every stream has been reset with `reason`. */
  onClose(reason: RpcError): void;
}

/** Options of a {@link Connection}. */
export interface ConnectionOptions {
  /** Which end this is; client streams are odd, server streams even. */
  role: "client" | "server";
  /** What this side accepts; announced in the handshake. */
  limits: Limits;
  /** How long a silent peer waits for a PING, and is tolerated; `false` turns keepalive off. */
  keepalive: KeepaliveOptions | false;
  /** Largest frame payload this side sends (capped by the peer's maxFrameSize). Default 64 KiB. */
  fragmentSize?: number;
  /** Most bytes held for incomplete messages together. Default 2 x maxMessageSize. */
  maxReassemblyBytes?: number;
  /** Milliseconds to wait for the peer's handshake frame. Default 10,000. */
  handshakeTimeout?: number;
  /** MessagePack decode limits. */
  codec?: CodecLimits;
}

const CLOSE_GRACE_MS = 1000;
/** Items in a stream's first ITEMS frame (see {@link Connection.sendItem}). */
export const FIRST_BATCH_ITEMS = 32;
/** Frame types (as bits) that may appear only on stream 0. */
const CONNECTION_ONLY =
  (1 << FrameType.HELLO) | (1 << FrameType.WELCOME) | (1 << FrameType.PING) | (1 << FrameType.PONG) | (1 << FrameType.GOAWAY);
const NO_PAYLOAD = Buffer.alloc(0);
const kConnection = Symbol("rapt.connection");
type OwnedSocket = Socket & { [kConnection]: Connection };

/**
 * The stream table of every connection that has not opened a stream yet:
 * an empty Map costs about 200 bytes, and an idle connection never needs
 * one. Only {@link Connection.addStream} writes, and it swaps in a Map of the
 * connection's own first; everything else only reads or deletes, which an
 * empty Map survives unchanged.
 */
const NO_STREAMS = new Map<number, StreamReceiver>();

/** Peer limits with the same values, shared by the connections that received them (see {@link sharedLimits}). */
const sharedLimitSets = new Map<string, Limits>();
const MAX_SHARED_LIMIT_SETS = 16;

/**
 * One frozen copy per distinct set of peer limits: nearly every peer
 * announces the same ones, and each connection keeping the HELLO's (or
 * WELCOME's) own object cost an idle connection about 60 bytes. Any set of
 * numeric fields is shared as it came (a newer peer's extra limits too);
 * anything else is kept as it is, and only a few distinct sets are shared,
 * so varied peers cannot grow the cache.
 */
function sharedLimits(limits: Limits): Limits {
  const entries = Object.entries(limits);
  if (entries.length > 8 || !entries.every(([, value]) => typeof value === "number")) return limits;
  // JSON, not a joined list: a peer's key could otherwise contain the separators
  // and make its limits the ones a different peer's connections share.
  const key = JSON.stringify(entries);
  let shared = sharedLimitSets.get(key);
  if (shared === undefined) {
    if (sharedLimitSets.size >= MAX_SHARED_LIMIT_SETS) return limits;
    shared = Object.freeze({ ...limits });
    sharedLimitSets.set(key, shared);
  }
  return shared;
}

/**
 * What a {@link Connection} derives from its {@link ConnectionOptions}. The
 * same for every connection made with one options object (a server's
 * connections share theirs), so they share it: kept in each connection,
 * these fields cost an idle server about 40 bytes a connection.
 */
interface ConnectionProfile {
  readonly role: "client" | "server";
  /** The limits announced and enforced. */
  readonly limits: Limits;
  readonly codec: MsgpackCodec;
  /** Largest frame payload this side sends, before the peer's maxFrameSize caps it. */
  readonly fragmentSize: number;
  readonly maxReassemblyBytes: number;
  readonly keepalive: KeepaliveOptions | undefined;
}

const profiles = new WeakMap<ConnectionOptions, ConnectionProfile>();

/** The profile of `options`, made once per options object (options are not expected to change once used). */
function profileOf(options: ConnectionOptions): ConnectionProfile {
  let profile = profiles.get(options);
  if (profile !== undefined) return profile;
  // The ITEMS array is an array like any other to the decoder, so no more
  // items per frame are announced than the array length limit allows.
  const maxArray = options.codec?.maxArrayLength ?? DEFAULT_MAX_ARRAY_LENGTH;
  const limits =
    options.limits.maxBatchItems !== undefined && options.limits.maxBatchItems > maxArray
      ? { ...options.limits, maxBatchItems: maxArray }
      : options.limits;
  // No string or binary can be larger than the message holding it, so by
  // default those limits follow maxMessageSize instead of a fixed figure.
  const max = options.limits.maxMessageSize;
  profile = {
    role: options.role,
    limits,
    codec: sharedCodec({ maxStrLength: max, maxBinLength: max, ...options.codec }),
    fragmentSize: options.fragmentSize ?? 64 * 1024,
    maxReassemblyBytes: options.maxReassemblyBytes ?? 2 * options.limits.maxMessageSize,
    keepalive: options.keepalive === false ? undefined : options.keepalive,
  };
  profiles.set(options, profile);
  return profile;
}

/**
 * The connection state machine both ends share: framing, reassembly, stream
 * table and id rules, keepalive, GOAWAY and teardown. It knows nothing of
 * methods or handlers; its owner (server or client) gets complete messages.
 *
 * Stream id rules (PROTOCOL.md, "Streams"): client-opened ids are odd and
 * server-opened ids even; each side's new ids strictly increase. A frame for
 * an id that was opened and has closed is ignored (it crossed a CANCEL or a
 * reset on the wire); one for an id never opened is a PROTOCOL_ERROR.
 */
export class Connection implements FrameSink, RecordSink, KeepaliveHost, KeepaliveSubject {
  /** The connection's state; see {@link ConnectionState}. */
  state: ConnectionState = ConnectionState.HANDSHAKE;
  /** Connection id given by the server in WELCOME (empty before). */
  id = "";
  /** The peer's limits, known after the handshake. */
  peerLimits: Limits | undefined;
  readonly socket: Socket;
  /** What follows from the options, shared by the connections made with the same options object. */
  private readonly profile: ConnectionProfile;
  /** Why the connection closed, once it has. */
  closeReason: RpcError | undefined;
  /** Highest stream id the peer has opened. */
  highestPeerStream = 0;
  /** GOAWAY we sent: CALLs above this id are refused. */
  goawaySentAt = -1;
  /** {@link NO_STREAMS} until the first stream is added. */
  private streams = NO_STREAMS;
  /** The peer's frames: from the socket, or, after an encrypted handshake, from the plaintext of its records. */
  private decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  /** Made on first use (see {@link assembler}). */
  private assemblerInstance: MessageAssembler | undefined;
  /**
   * How long the peer has been silent, in whole keepalive intervals (ms), or HEARD: set on every chunk, read on each keepalive tick. */
  private silence = HEARD;
  /** Last keepalive round trip measured (see {@link rtt}). */
  private lastRtt: number | undefined = undefined;
  /** Which of its keepalive clock's slots ticks this connection; -1 while not ticking. */
  keepaliveSlot = -1;
  private readonly owner: ConnectionOwner;
  private nextLocalStream: number;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private drained: Promise<void> | undefined;
  private itemSizeMemory: ItemSizeMemory | undefined;
  /** A graceful end is under way (see {@link end}). */
  private ending = false;
  /** The agreed per-message processing (compression); undefined (the fast path) when the handshake agreed on none. */
  private chain: ProcessorChain | undefined;
  /** The record layer, once an encrypted handshake has completed. */
  private records: RecordTransform | undefined;
  /** Reads the peer's records, once the incoming stream has switched to them. */
  private recordDecoder: RecordDecoder | undefined;
  /**
   * Set while the peer's stream has switched to records but this side cannot
   * open them yet (a server whose async authenticate holds back WELCOME): what
   * arrived meanwhile, with the socket paused. Undefined otherwise.
   */
  private heldRecordBytes: Buffer[] | undefined;
  /** Set by {@link sendOnlyRecords}. */
  private recordsOnly = false;
  /** Most items per ITEMS frame to the peer; 0 (before the handshake, or when the peer takes none) sends every item alone. */
  private batchItems = 0;
  /** Largest ITEMS payload to the peer: one frame, within its maxMessageSize. */
  private batchBytes = 0;

  constructor(socket: Socket, owner: ConnectionOwner, options: ConnectionOptions) {
    this.socket = socket;
    this.owner = owner;
    this.profile = profileOf(options);
    this.nextLocalStream = options.role === "client" ? 1 : 2;
    this.decoder = new FrameDecoder(this, { maxFrameSize: HANDSHAKE_MAX_FRAME_SIZE });
    this.writer = new FrameWriter(socket, { fragmentSize: HANDSHAKE_MAX_FRAME_SIZE });
    const handshakeTimeout = options.handshakeTimeout ?? 10_000;
    this.handshakeTimer = setTimeout(() => {
      // A client that sent nothing broke the protocol; a server that does not
      // answer is down or overloaded, which is worth retrying (UNAVAILABLE),
      // not a permanent refusal like a PROTOCOL_ERROR in the server's ERROR.
      const code = this.role === "server" ? ErrorCode.PROTOCOL_ERROR : ErrorCode.UNAVAILABLE;
      this.fail(new RpcError(code, `handshake not completed within ${handshakeTimeout} ms`));
    }, handshakeTimeout);
    this.handshakeTimer.unref();
    socket.setNoDelay(true);
    // One set of listener functions for all connections, which find theirs on
    // the socket: closures per connection cost an idle server memory.
    (socket as OwnedSocket)[kConnection] = this;
    socket.on("data", Connection.onSocketData);
    socket.on("error", Connection.onSocketError);
    socket.on("close", Connection.onSocketClose);
  }

  private static onSocketData(this: Socket, chunk: Buffer): void {
    (this as OwnedSocket)[kConnection].onData(chunk);
  }

  private static onSocketError(this: Socket, error: Error): void {
    (this as OwnedSocket)[kConnection].close(socketErrorReason(error));
  }

  private static onSocketClose(this: Socket): void {
    const connection = (this as OwnedSocket)[kConnection];
    // A TLS server that refuses the client's certificate just drops the
    // connection once the TLS handshake is over; its alert is often lost.
    const hint =
      connection.state === ConnectionState.HANDSHAKE && connection.role === "client" && (this as { encrypted?: boolean }).encrypted === true
        ? " before the handshake completed (a TLS server does this when it refuses the client's certificate)"
        : "";
    connection.close(new RpcError(ErrorCode.UNAVAILABLE, `connection closed by peer${hint}`));
  }

  /** The MessagePack codec, shared with every connection of the same limits (copy encodeShared results at once). */
  get codec(): MsgpackCodec {
    return this.profile.codec;
  }

  /** Which end this is. */
  get role(): "client" | "server" {
    return this.profile.role;
  }

  /** What this side accepts, as announced in the handshake. */
  get limits(): Limits {
    return this.profile.limits;
  }

  /** Keepalive settings, undefined with keepalive off. */
  private get keepalive(): KeepaliveOptions | undefined {
    return this.profile.keepalive;
  }

  /**
   * Reassembly of fragmented messages, made when the first frame on a stream
   * arrives: an idle connection (only handshake and PING/PONG on stream 0)
   * never needs one. Checks that only ask whether one is busy use
   * {@link assemblerInstance}, so they do not make one.
   */
  private get assembler(): MessageAssembler {
    return (this.assemblerInstance ??= new MessageAssembler({
      maxMessageSize: this.limits.maxMessageSize,
      maxBufferedBytes: this.profile.maxReassemblyBytes,
    }));
  }

  /** Last keepalive round-trip time in ms; undefined before the first PONG or with keepalive off. */
  get rtt(): number | undefined {
    return this.lastRtt;
  }

  /** Number of open streams (both directions). */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Whether new streams may be opened. */
  get isOpen(): boolean {
    return this.state === ConnectionState.OPEN;
  }

  /** Whether the handshake agreed on encryption: everything after it travels in sealed records, both ways. */
  get encrypted(): boolean {
    return this.records !== undefined;
  }

  /** Whether the handshake agreed on compression. */
  get compressed(): boolean {
    return this.chain !== undefined && (this.chain.flags & FrameFlag.COMPRESSED) !== 0;
  }

  /**
   * Completes the handshake with the peer's limits: frame size and keepalive
   * take effect, and so do the processors the handshake agreed on (`chain`):
   * messages sent from now on are compressed as agreed and the peer may set
   * COMPRESSED; with encryption, both byte streams are records from here
   * on. Call it while handling the peer's handshake frame, or after
   * {@link expectRecords} was called then.
   */
  open(peerLimits: Limits, id?: string, chain?: ProcessorChain): void {
    if (this.state !== ConnectionState.HANDSHAKE) return;
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.peerLimits = sharedLimits(peerLimits);
    if (id !== undefined) this.id = id;
    this.state = ConnectionState.OPEN;
    if (chain?.records !== undefined) this.startRecords(chain.records);
    if (chain?.processesMessages === true) this.chain = chain;
    this.decoder.allowedFlags = FrameFlag.FOLLOWS | (chain?.flags ?? 0);
    this.decoder.maxFrameSize = this.limits.maxFrameSize;
    this.writer.fragmentSize = Math.min(this.profile.fragmentSize, peerLimits.maxFrameSize);
    // Compressed messages are compressed whole, so items are not batched
    // into frames that would then have to be compressed again.
    if (this.chain === undefined && peerLimits.maxBatchItems !== undefined) {
      this.batchItems = peerLimits.maxBatchItems;
      this.batchBytes = Math.min(this.writer.fragmentSize, peerLimits.maxMessageSize);
    }
    if (this.keepalive !== undefined) {
      KeepaliveClock.of(this.keepalive.interval).add(this);
      // Keepalive PINGs only a silent peer, so a busy connection would never
      // measure the round trip the client's least-loaded picker weighs
      // connections by: one PING at the start measures it.
      if (this.role === "client") this.sendPing(pingPayload());
    }
  }

  /**
   * Switches the incoming byte stream to records right after the handshake
   * frame being handled: its FrameDecoder stops there, and the bytes after
   * it are records. A server calls it as soon as it has accepted an
   * encrypted HELLO, since the client's records follow it directly, even
   * when its WELCOME (and the record transform) comes later; records that
   * arrive before {@link open} are held, with the socket paused. The client
   * needs no call: open() switches at its WELCOME.
   */
  expectRecords(): void {
    if (this.heldRecordBytes !== undefined || this.recordDecoder !== undefined) return;
    this.heldRecordBytes = [];
    this.decoder.handOff();
  }

  /**
   * The record layer takes over: every batch the writer flushes is sealed
   * into records, and the peer's records are opened into a new FrameDecoder.
   */
  private startRecords(records: RecordTransform): void {
    this.expectRecords();
    this.records = records;
    this.writer.output = (chunks) => {
      try {
        return records.seal(chunks);
      } catch (error) {
        // Nothing unsealed may go out: the batch is dropped and the connection closed.
        queueMicrotask(() => this.close(RpcError.from(error, ErrorCode.INTERNAL)));
        return [];
      }
    };
    this.decoder = new FrameDecoder(this, { maxFrameSize: this.limits.maxFrameSize });
    this.recordDecoder = new RecordDecoder(this, { minRecordSize: records.minRecordSize, maxRecordSize: records.maxRecordSize });
    const held = this.heldRecordBytes as Buffer[];
    this.heldRecordBytes = undefined;
    if (held.length === 0) return;
    // Bytes held while WELCOME waited: read once the caller is done opening
    // (it announces the connection first), then the socket reads on.
    queueMicrotask(() => {
      for (const chunk of held) this.onData(chunk);
      // Also when they failed the connection: the rest is read and discarded,
      // so the peer's FIN is seen and the socket closes now.
      this.socket.resume();
    });
  }

  /** Keeps bytes of records that cannot be opened yet, and stops reading more until they can. */
  private holdRecordBytes(held: Buffer[], bytes: Buffer): void {
    if (bytes.length === 0) return;
    held.push(bytes);
    this.socket.pause();
  }

  /** Allocates the next local stream id, or returns -1 when ids are used up. */
  nextStreamId(): number {
    const id = this.nextLocalStream;
    if (id > MAX_STREAM_ID) return -1;
    this.nextLocalStream += 2;
    return id;
  }

  /**
   * Registers a stream's receiving end. On a connection that has closed
   * meanwhile (a caller handed this connection just before it failed, its
   * continuation running after), the stream is reset with the close reason
   * once the caller has finished setting it up, instead of waiting forever.
   */
  addStream(streamId: number, receiver: StreamReceiver): void {
    if (this.state === ConnectionState.CLOSED) {
      const reason = this.closeReason as RpcError;
      queueMicrotask(() => receiver.onReset(reason));
      return;
    }
    if (this.streams === NO_STREAMS) this.streams = new Map();
    this.streams.set(streamId, receiver);
  }

  /** Forgets a finished stream; late frames for it will be ignored. */
  removeStream(streamId: number): void {
    this.streams.delete(streamId);
    if (this.assemblerInstance?.busy === true) this.assemblerInstance.forget(streamId);
    this.endIfDrained();
  }

  /**
   * Queues one message on a stream, compressed if the handshake agreed on
   * it and fragmented as needed (with encryption, the writer seals its
   * frames into records when it flushes). Throws RESOURCE_EXHAUSTED if it
   * exceeds the peer's maxMessageSize, before or after compression: the
   * peer applies its limit to both.
   */
  send(type: number, streamId: number, payload: Uint8Array, owned = false): void {
    const max = this.peerLimits?.maxMessageSize ?? HANDSHAKE_MAX_FRAME_SIZE;
    if (payload.length > max) throw tooLarge(type, payload.length, max);
    const chain = this.chain;
    if (chain === undefined) {
      this.writer.writeMessage(type, streamId, payload, this.ownership(payload, owned));
      return;
    }
    const processed = chain.encode(type, streamId, payload);
    if (processed.length > max) throw tooLarge(type, processed.length, max);
    this.writer.writeMessage(type, streamId, processed, owned || processed !== payload ? "owned" : "borrowed", chain.lastFlags);
  }

  /**
   * Who owns a payload about to be queued unprocessed: a large encoding
   * still in the shared encoder's buffer is taken over (its memory is from
   * the pool, and goes back there once written), so it is sent without a
   * copy (see {@link MsgpackCodec.release}).
   */
  private ownership(payload: Uint8Array, owned: boolean): MessageBytes {
    if (owned) return "owned";
    return payload.length > this.writer.fragmentSize && this.codec.release(payload) ? "pooled" : "borrowed";
  }

  /**
   * {@link send} for a message made of two parts (a CALL's head and its
   * arguments). When it goes out as one unprocessed frame, both parts are
   * copied straight into the outgoing batch instead of being joined first.
   */
  sendParts(type: number, streamId: number, first: Uint8Array, second: Uint8Array): void {
    const length = first.length + second.length;
    if (this.chain === undefined) {
      const max = this.peerLimits?.maxMessageSize ?? HANDSHAKE_MAX_FRAME_SIZE;
      if (length > max) throw tooLarge(type, length, max);
      this.writer.writeMessageParts(type, streamId, first, second, this.ownership(second, false));
      return;
    }
    const payload = Buffer.allocUnsafe(length);
    payload.set(first, 0);
    payload.set(second, first.length);
    this.send(type, streamId, payload, true);
  }

  /** Queues a message without the size check (empty ones, and ERRORs already cut to fit), processed as agreed. */
  private sendUnchecked(type: number, streamId: number, payload: Uint8Array): void {
    const chain = this.chain;
    if (chain === undefined) this.writer.writeMessage(type, streamId, payload);
    else {
      const processed = chain.encode(type, streamId, payload);
      this.writer.writeMessage(type, streamId, processed, processed !== payload ? "owned" : "borrowed", chain.lastFlags);
    }
  }

  /** Queues one unfragmented frame (stream 0, CREDIT), processed as agreed. */
  private sendFrame(type: number, streamId: number, payload: Uint8Array): void {
    const chain = this.chain;
    if (chain === undefined) this.writer.writeFrame(type, 0, streamId, payload);
    else {
      const processed = chain.encode(type, streamId, payload);
      this.writer.writeFrame(type, chain.lastFlags, streamId, processed);
    }
  }

  /** Encodes `value` and sends it as one message. */
  sendValue(type: number, streamId: number, value: unknown): void {
    if (this.sendInPlace(type, streamId, NO_PAYLOAD, value)) return;
    this.send(type, streamId, this.codec.encodeShared(value));
  }

  /**
   * Queues a message of `prefix` then `value` encoded straight into the
   * outgoing batch, when it can go as one unprocessed frame and the value
   * is plain data (see {@link FrameWriter.writeFrameInPlace}); returns
   * false, queuing nothing, otherwise, and the caller sends it as usual.
   */
  sendInPlace(type: number, streamId: number, prefix: Uint8Array, value: unknown): boolean {
    if (this.chain !== undefined) return false;
    const max = Math.min(this.writer.fragmentSize, this.peerLimits?.maxMessageSize ?? HANDSHAKE_MAX_FRAME_SIZE);
    return this.writer.writeFrameInPlace(type, streamId, this.codec, prefix, value, max);
  }

  /**
   * Sends one item of a stream. Items of a stream queued in the same turn
   * share ITEMS frames when the peer accepts them (its `maxBatchItems`):
   * one frame header, one decode and one dispatch for many small items.
   * Credit still counts each item.
   *
   * `sent`, the number of items the stream has sent before this one, when
   * the caller counts them: a stream's first frame then takes at most
   * {@link FIRST_BATCH_ITEMS} items and is written to the socket as soon as
   * it has them. A receiver waiting for a new stream then starts on its
   * items (and grants credit) while the producer still makes the rest of
   * the window, where one frame at the end of the turn kept it idle until
   * the producer had run out of credit.
   */
  sendItem(streamId: number, value: unknown, sent = -1): void {
    let batchItems = this.batchItems;
    const eager = sent === 0;
    if (eager) batchItems = Math.min(batchItems, FIRST_BATCH_ITEMS);
    if (batchItems !== 0 && this.writer.writeItemInPlace(streamId, this.codec, value, batchItems, this.batchBytes, eager)) return;
    const bytes = this.codec.encodeShared(value);
    if (batchItems === 0 || !this.writer.writeItem(streamId, bytes, batchItems, this.batchBytes, eager)) {
      this.send(FrameType.ITEM, streamId, bytes);
    }
  }

  /**
   * The items of an ITEMS message from the peer. Throws PROTOCOL_ERROR when
   * it is malformed, holds more than this side's `maxBatchItems`, or this side
   * announced none (then the peer should not have sent one).
   */
  decodeItems(payload: Uint8Array): unknown[] {
    const max = this.limits.maxBatchItems;
    if (max === undefined) throw new RpcError(ErrorCode.PROTOCOL_ERROR, "ITEMS frame, but this side announced no maxBatchItems");
    return this.codec.decodeItems(payload, max);
  }

  /** Sends a message without payload (END, CANCEL), in order after the stream's earlier messages. */
  sendEmpty(type: number, streamId: number): void {
    this.sendUnchecked(type, streamId, NO_PAYLOAD);
  }

  /**
   * Grants the peer `n` more ITEMs on a stream. Written now unless `withTurn`
   * (an opening grant, which goes in the same write as its CALL).
   */
  sendCredit(streamId: number, n: number, withTurn = false): void {
    this.sendFrame(FrameType.CREDIT, streamId, encodeCredit(n));
    // Written now, not at the end of the turn: a consumer taking buffered
    // items runs in microtasks until it has taken them all, and the sender,
    // which may have run out of credit, would wait for that too.
    if (!withTurn) this.writer.flush();
  }

  /**
   * Whether a message of the stream is still being fragmented out: nothing
   * else may be sent on it meanwhile that is not allowed between fragments
   * (a CREDIT between a CALL's fragments is a protocol error, §6.2).
   */
  isFragmenting(streamId: number): boolean {
    return this.writer.hasQueued(streamId);
  }

  /** The average item size of the last stream `method` sent this side on this connection; 0 if none is remembered. */
  expectedItemBytes(method: string): number {
    return this.itemSizeMemory === undefined ? 0 : this.itemSizeMemory.get(method);
  }

  /** Remembers the average item size of a stream `method` sent this side (see {@link ItemSizeMemory}). */
  rememberItemBytes(method: string, bytes: number): void {
    (this.itemSizeMemory ??= new ItemSizeMemory()).remember(method, bytes);
  }

  /**
   * Resolves once the socket has drained, for senders that must not outrun
   * it (channel `send()`); undefined when it can take more now. One promise
   * is shared by all waiters of a drain cycle.
   */
  whenWritable(): Promise<void> | undefined {
    if (!this.socket.writableNeedDrain || this.state === ConnectionState.CLOSED) return undefined;
    this.drained ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.drained = undefined;
        this.socket.off("drain", done);
        this.socket.off("close", done);
        resolve();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
    return this.drained;
  }

  /** ITEMs the peer accepts per stream before it grants more. */
  get peerStreamWindow(): number {
    return this.peerLimits?.streamWindow ?? DEFAULT_STREAM_WINDOW;
  }

  /** ITEMs this side accepts per stream before granting more. */
  get streamWindow(): number {
    return this.limits.streamWindow ?? DEFAULT_STREAM_WINDOW;
  }

  /** Sends an ERROR frame on a stream (and drops anything still queued for it). */
  sendError(streamId: number, error: RpcError): void {
    this.writer.dropStream(streamId);
    const max = (this.peerLimits?.maxMessageSize ?? HANDSHAKE_MAX_FRAME_SIZE) - (this.chain?.overhead ?? 0);
    this.sendUnchecked(FrameType.ERROR, streamId, this.errorPayload(error, max));
  }

  /**
   * An ERROR payload that always encodes and fits `max` bytes: data that
   * cannot be encoded is dropped and an oversized one cut to code and message.
   */
  private errorPayload(error: RpcError, max: number): Uint8Array {
    let payload: Uint8Array;
    try {
      payload = this.codec.encodeShared(errorToBody(error));
    } catch {
      payload = this.codec.encodeShared([error.code, error.message]);
    }
    if (payload.length > max) payload = this.codec.encodeShared([error.code, error.message.slice(0, 1024)]);
    return payload;
  }

  /**
   * Drops a stream's queued output without telling the peer. Returns true
   * when a message was cut off partway, which leaves the peer holding
   * fragments of it: the caller must then send CANCEL.
   */
  dropStream(streamId: number): boolean {
    return this.writer.dropStream(streamId);
  }

  /**
   * Abandons a stream: its queued output is dropped and CANCEL is sent, with
   * a channel's close `reason` as its payload when given.
   */
  cancelStream(streamId: number, reason?: string): void {
    this.writer.dropStream(streamId);
    if (reason === undefined || reason === "") this.sendEmpty(FrameType.CANCEL, streamId);
    else this.sendUnchecked(FrameType.CANCEL, streamId, this.codec.encodeShared(reason.slice(0, 1024)));
  }

  /**
   * Sends the handshake frame (HELLO or WELCOME), never processed, and
   * flushes it. Returns a copy of the payload sent: processors bind the
   * connection to it.
   */
  sendHandshake(type: number, value: unknown): Buffer {
    const payload = this.codec.encode(value);
    this.writer.writeFrame(type, 0, 0, payload);
    this.writer.flush();
    return payload;
  }

  /**
   * Starts a graceful close: sends GOAWAY naming the last peer stream that
   * will be handled; the connection ends once its streams are done.
   */
  goaway(reason: RpcError): void {
    // Before the handshake there are no streams to drain, and a GOAWAY frame
    // is not a valid handshake frame (a client's could even precede its
    // HELLO): just close.
    if (this.state === ConnectionState.HANDSHAKE) {
      this.close(reason);
      return;
    }
    if (this.state !== ConnectionState.OPEN) return;
    this.goawaySentAt = this.highestPeerStream;
    this.sendFrame(FrameType.GOAWAY, 0, this.codec.encodeShared([this.highestPeerStream, reason.code, reason.message]));
    this.state = ConnectionState.DRAINING;
    this.writer.flush();
    this.endIfDrained();
  }

  /**
   * Fails the connection: sends ERROR on stream 0 (when the socket still
   * works), ends the socket, and resets every stream with `error`.
   */
  fail(error: RpcError): void {
    if (this.state === ConnectionState.CLOSED) return;
    this.decoder.stop();
    // A client that sent an encrypted HELLO and has no record layer yet has
    // no way to tell the server: the server reads its bytes as records, and
    // an ERROR in the clear would only be refused as a broken one.
    if (!this.recordsOnly || this.records !== undefined) {
      // Stream-0 frames are never fragmented: the ERROR must fit one frame the
      // peer accepts (64 KiB before the handshake). After an encrypted
      // handshake it goes in a record like everything else.
      const max =
        Math.min(this.peerLimits?.maxFrameSize ?? HANDSHAKE_MAX_FRAME_SIZE, HANDSHAKE_MAX_FRAME_SIZE) - (this.chain?.overhead ?? 0);
      this.sendFrame(FrameType.ERROR, 0, this.errorPayload(error, max));
      this.writer.flush();
    }
    this.close(error);
  }

  /**
   * This side has sent an encrypted HELLO: from now on it may only send
   * records, so before the record layer starts, {@link fail} closes without
   * an ERROR frame (PROTOCOL.md §13.6).
   */
  sendOnlyRecords(): void {
    this.recordsOnly = true;
  }

  /** Closes now: every open stream is reset with `reason`. Idempotent. */
  close(reason: RpcError): void {
    if (this.state === ConnectionState.CLOSED) return;
    this.state = ConnectionState.CLOSED;
    this.closeReason = reason;
    clearTimeout(this.handshakeTimer);
    if (this.keepaliveSlot >= 0) KeepaliveClock.of((this.keepalive as KeepaliveOptions).interval).remove(this);
    this.decoder.stop();
    this.recordDecoder?.stop();
    this.writer.close();
    this.assemblerInstance?.clear();
    const socket = this.socket;
    if (this.heldRecordBytes !== undefined) {
      // Paused for records that will never be read: read and discard the
      // rest, so the peer's FIN is seen and the socket closes now.
      this.heldRecordBytes = undefined;
      socket.resume();
    }
    if (!socket.destroyed) {
      socket.end();
      // end() lets the peer read what was flushed; a peer that never closes its side is cut off.
      setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
    }
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const stream of streams) stream.onReset(reason);
    this.owner.onClose(reason);
  }

  /**
   * After GOAWAY, ends the connection once nothing is left to do: no open
   * stream, and no peer CALL still being reassembled. A CALL that began
   * before our GOAWAY has an id within its lastStreamId, which promised the
   * peer an answer; it becomes a stream (or is answered) once complete.
   * Checked whenever a stream closes and after every chunk read.
   */
  private endIfDrained(): void {
    if (this.state === ConnectionState.DRAINING && this.streams.size === 0 && this.assemblerInstance?.busy !== true) this.end();
  }

  /**
   * Graceful end after GOAWAY once no stream is left. The close waits for
   * what is still queued: the stream that just finished has usually not sent
   * its last message yet (a server call removes its stream, then sends the
   * RESULT), and large messages go out fragment by fragment, paced by the
   * socket's drain. Closing at once dropped both: the last in-flight call of
   * a draining server never got its result, and a large result cut off.
   */
  private end(): void {
    if (this.ending) return;
    this.ending = true;
    const finish = (): void => {
      if (this.state === ConnectionState.CLOSED) return;
      this.writer.flush();
      if (this.writer.queuedBulkBytes === 0 || this.socket.destroyed) {
        this.close(new RpcError(ErrorCode.UNAVAILABLE, "connection closed after GOAWAY"));
      } else if (this.socket.writableNeedDrain) {
        // The writer sends more on this drain (its listener runs first).
        this.socket.once("drain", finish);
      } else {
        // The writer has queued its next round of fragments for this turn.
        setImmediate(finish);
      }
    };
    setImmediate(finish);
  }

  // --- KeepaliveHost ---

  sendPing(data: Buffer): void {
    this.sendFrame(FrameType.PING, 0, data);
  }

  onKeepaliveError(error: unknown): void {
    this.close(RpcError.from(error, ErrorCode.INTERNAL));
  }

  keepaliveTick(): void {
    // Sending the PING only queues it: no bytes can arrive (and set HEARD) meanwhile.
    this.silence = tickKeepalive(this, this.silence, this.keepalive as KeepaliveOptions, this);
  }

  keepaliveFailed(error: unknown): void {
    this.onKeepaliveError(error);
  }

  onSilent(silentMs: number): void {
    this.close(new RpcError(ErrorCode.UNAVAILABLE, `peer silent for ${silentMs} ms, past the keepalive timeout`));
  }

  // --- FrameSink ---

  private onData(chunk: Buffer): void {
    this.silence = HEARD;
    try {
      if (this.recordDecoder !== undefined) this.recordDecoder.push(chunk);
      else if (this.heldRecordBytes !== undefined) this.holdRecordBytes(this.heldRecordBytes, chunk);
      else {
        const rest = this.decoder.push(chunk);
        // The handshake frame was the last one in the clear: the rest of the chunk is records.
        if (rest !== undefined) this.onRecordBytes(rest);
      }
      // A frame may have completed (or voided) the last CALL being reassembled.
      if (this.state === ConnectionState.DRAINING) this.endIfDrained();
    } catch (error) {
      // PROTOCOL_ERROR from the frames, UNAUTHENTICATED from the records: the peer's doing.
      this.fail(
        error instanceof RpcError && (error.code === ErrorCode.PROTOCOL_ERROR || error.code === ErrorCode.UNAUTHENTICATED)
          ? error
          : new RpcError(ErrorCode.INTERNAL, `failed to process frame: ${(error as Error).message}`),
      );
    }
  }

  /** The bytes after the peer's handshake frame, once the incoming stream has switched to records. */
  private onRecordBytes(bytes: Buffer): void {
    if (this.state === ConnectionState.CLOSED) return;
    if (this.recordDecoder !== undefined) this.recordDecoder.push(bytes);
    else if (this.heldRecordBytes !== undefined) this.holdRecordBytes(this.heldRecordBytes, bytes);
  }

  /** One record from the peer: opened (or the connection fails, UNAUTHENTICATED), its plaintext is the next slice of the peer's frames. */
  onRecord(body: Buffer): void {
    if (this.state === ConnectionState.CLOSED) return;
    this.decoder.push((this.records as RecordTransform).open(body));
  }

  onFrame(type: number, flags: number, streamId: number, payload: Buffer, owned = false): void {
    if (this.state === ConnectionState.CLOSED) return;
    if (this.state === ConnectionState.HANDSHAKE) {
      if (streamId !== 0) {
        throw new RpcError(
          ErrorCode.PROTOCOL_ERROR,
          `expected a handshake frame on stream 0, got ${frameTypeName(type)} on stream ${streamId}`,
        );
      }
      if (flags !== 0) throw new RpcError(ErrorCode.PROTOCOL_ERROR, `${frameTypeName(type)} handshake frame may not be fragmented`);
      try {
        this.owner.onHandshake(type, payload);
      } catch (error) {
        // The owner's refusal keeps its code (UNAUTHENTICATED from crypto, ...).
        if (!(error instanceof RpcError)) throw error;
        this.fail(error);
      }
      return;
    }
    if (streamId === 0) {
      this.onConnectionFrame(type, flags, payload);
      return;
    }
    if (!this.admitsStreamFrame(type, streamId)) return;
    if (flags === 0 && payload.length > this.limits.maxMessageSize && !this.assembler.has(streamId)) {
      // maxFrameSize and maxMessageSize are separate limits, and a frame may
      // be larger than a message: the assembler checks fragmented messages,
      // a message in one frame is checked here.
      this.onOversized(
        type,
        streamId,
        new RpcError(
          ErrorCode.RESOURCE_EXHAUSTED,
          `${frameTypeName(type)} message on stream ${streamId} exceeds the maximum message size of ${this.limits.maxMessageSize} bytes`,
          { streamId, limit: this.limits.maxMessageSize },
        ),
      );
      return;
    }
    // CREDIT is never part of a message: it may come between the fragments of
    // one on its stream (the peer grants while it still sends), PROTOCOL.md §6.2.
    if ((flags !== 0 || this.assemblerInstance?.busy === true) && !(type === FrameType.CREDIT && flags === 0)) {
      const whole = this.assemble(type, flags, streamId, payload, payload.length, owned);
      if (whole === null) return;
      payload = whole;
      // The last fragment's processing flags stand for the message's.
      if ((flags & PROCESSING_FLAGS) !== 0) {
        const plain = this.unprocess(type, flags, streamId, payload);
        if (plain === undefined) return;
        payload = plain;
      }
    }
    if (type === FrameType.CALL) {
      if (this.goawaySentAt >= 0 && streamId > this.goawaySentAt) {
        this.sendError(streamId, new RpcError(ErrorCode.UNAVAILABLE, "server is shutting down; the call was not started"));
        return;
      }
      this.owner.onCall(streamId, payload);
      return;
    }
    (this.streams.get(streamId) as StreamReceiver).onMessage(type, payload);
  }

  /**
   * A fragment that spans socket chunks, as views of them (FrameSink): put
   * into its message as it is, so its bytes are copied once, when the
   * message is joined, not also into a buffer of the fragment's own.
   */
  onFragmentParts(type: number, flags: number, streamId: number, parts: Buffer[], length: number): void {
    if (this.state === ConnectionState.CLOSED) return;
    if (this.state === ConnectionState.HANDSHAKE || streamId === 0) {
      // Refused there, with onFrame's errors: these frames may not be fragmented.
      this.onFrame(type, flags, streamId, Buffer.concat(parts, length), true);
      return;
    }
    if (!this.admitsStreamFrame(type, streamId)) return;
    // FOLLOWS is set, so this is never a whole message.
    this.assemble(type, flags, streamId, parts, length, false);
  }

  /**
   * Whether a frame on stream `streamId` (not 0) goes on to be handled: a
   * CALL opening a stream is checked as the peer's next stream, a frame for
   * a stream that is gone is answered here. Throws PROTOCOL_ERROR for a
   * connection-only frame type.
   */
  private admitsStreamFrame(type: number, streamId: number): boolean {
    if (((1 << type) & CONNECTION_ONLY) !== 0) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `${frameTypeName(type)} frame on stream ${streamId}: it is only allowed on stream 0`);
    }
    if (type === FrameType.CALL) {
      if (!this.assembler.has(streamId)) this.checkNewPeerStream(streamId);
    } else if (!this.streams.has(streamId)) {
      if (this.assembler.has(streamId)) this.onPartialCallInterrupted(type, streamId);
      else this.onUnknownStream(type, streamId);
      return false;
    }
    return true;
  }

  /** Adds a fragment to its message: the whole message once complete, null while more follow or when it was refused as too large (answered here). */
  private assemble(type: number, flags: number, streamId: number, bytes: Buffer | Buffer[], length: number, owned: boolean): Buffer | null {
    try {
      return Array.isArray(bytes)
        ? this.assembler.addParts(type, flags, streamId, bytes, length)
        : this.assembler.add(type, flags, streamId, bytes, owned);
    } catch (error) {
      if (!(error instanceof RpcError) || error.code !== ErrorCode.RESOURCE_EXHAUSTED) throw error;
      this.onOversized(type, streamId, error);
      return null;
    }
  }

  private checkNewPeerStream(streamId: number): void {
    const peerParity = this.role === "server" ? 1 : 0;
    if ((streamId & 1) !== peerParity) {
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `CALL on stream ${streamId}: the ${this.role === "server" ? "client opens odd" : "server opens even"} stream ids`,
      );
    }
    if (streamId <= this.highestPeerStream) {
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `CALL on stream ${streamId}: new stream ids must increase (last was ${this.highestPeerStream})`,
      );
    }
    this.highestPeerStream = streamId;
  }

  private onUnknownStream(type: number, streamId: number): void {
    const peerOpened = (streamId & 1) === (this.role === "server" ? 1 : 0);
    const highest = peerOpened ? this.highestPeerStream : this.nextLocalStream - 2;
    if (streamId > highest) {
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `${frameTypeName(type)} frame for stream ${streamId}, which was never opened`);
    }
    // Otherwise a closed stream: the frame crossed a CANCEL or reset on the wire.
  }

  /**
   * A frame other than CALL on a peer stream whose CALL is still arriving in
   * fragments: CANCEL or ERROR abandon that CALL; anything else breaks it.
   */
  private onPartialCallInterrupted(type: number, streamId: number): void {
    if (type !== FrameType.CANCEL && type !== FrameType.ERROR) {
      throw new RpcError(
        ErrorCode.PROTOCOL_ERROR,
        `${frameTypeName(type)} frame on stream ${streamId} interrupts a fragmented CALL message`,
      );
    }
    this.assembler.forget(streamId);
  }

  /**
   * A message that cannot be delivered (too large, or, compressed, too large
   * or malformed once inflated) fails alone: a CALL with an ERROR on its
   * stream, anything else by closing its stream locally with CANCEL.
   */
  private onOversized(type: number, streamId: number, error: RpcError): void {
    if (type === FrameType.CALL) {
      this.sendError(streamId, error);
      return;
    }
    const stream = this.streams.get(streamId);
    if (stream === undefined) return;
    this.streams.delete(streamId);
    // The stream is gone, so the rest of the message is ignored as frames for
    // a closed stream; the assembler need not track it.
    this.assembler.forget(streamId);
    this.cancelStream(streamId);
    stream.onReset(error);
  }

  /**
   * Undoes the agreed per-message processing of a complete message (it is
   * flagged COMPRESSED). One that cannot be decompressed, or would
   * decompress past maxMessageSize, fails only its message, as an oversized
   * one does. Returns undefined when the message is gone.
   */
  private unprocess(type: number, flags: number, streamId: number, payload: Buffer): Buffer | undefined {
    try {
      return (this.chain as ProcessorChain).decompress(type, flags, streamId, payload);
    } catch (error) {
      this.onOversized(type, streamId, RpcError.from(error, ErrorCode.PROTOCOL_ERROR));
      return undefined;
    }
  }

  private onConnectionFrame(type: number, flags: number, payload: Buffer): void {
    if ((flags & FrameFlag.FOLLOWS) !== 0)
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `${frameTypeName(type)} on stream 0 may not be fragmented`);
    if ((flags & FrameFlag.COMPRESSED) !== 0)
      throw new RpcError(ErrorCode.PROTOCOL_ERROR, `${frameTypeName(type)} on stream 0 may not be compressed`);
    switch (type) {
      case FrameType.PING:
        this.sendFrame(FrameType.PONG, 0, payload);
        return;
      case FrameType.PONG:
        if (this.keepalive !== undefined) this.lastRtt = rttOfPong(payload) ?? this.lastRtt;
        return;
      case FrameType.GOAWAY:
        this.onGoawayFrame(payload);
        return;
      case FrameType.ERROR: {
        let reason: RpcError;
        try {
          reason = errorFromBody(this.codec.decode(payload));
        } catch (error) {
          reason = RpcError.from(error, ErrorCode.PROTOCOL_ERROR);
        }
        this.close(reason);
        return;
      }
      default:
        throw new RpcError(ErrorCode.PROTOCOL_ERROR, `${frameTypeName(type)} frame is not allowed on stream 0 after the handshake`);
    }
  }

  private onGoawayFrame(payload: Buffer): void {
    const [lastStreamId, code, message] = parseGoaway(this.codec.decode(payload));
    const reason = errorFromBody([code, message]);
    if (this.state === ConnectionState.OPEN) this.state = ConnectionState.DRAINING;
    const notProcessed = new RpcError(
      ErrorCode.UNAVAILABLE,
      `peer is going away (${message}); the call was not processed and may be retried`,
    );
    for (const [streamId, stream] of this.streams) {
      const localParity = this.role === "client" ? 1 : 0;
      if ((streamId & 1) === localParity && streamId > lastStreamId) {
        this.streams.delete(streamId);
        // The peer will not process it: stop sending the rest of a large
        // message, and void the part it has (its first fragment went out).
        if (this.writer.dropStream(streamId)) this.sendEmpty(FrameType.CANCEL, streamId);
        stream.onReset(notProcessed, true);
      }
    }
    this.owner.onGoaway(lastStreamId, reason);
    this.endIfDrained();
  }
}

function tooLarge(type: number, size: number, max: number): RpcError {
  return new RpcError(
    ErrorCode.RESOURCE_EXHAUSTED,
    `${frameTypeName(type)} message of ${size} bytes exceeds the peer's maximum message size of ${max} bytes`,
    { size, limit: max },
  );
}
