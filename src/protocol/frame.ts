/**
 * The fixed frame header. Every frame on a rapt connection is
 *
 *     length:u32be  type:u8  flags:u8  streamId:u32be  payload[length]
 *
 * `length` counts the payload only. The header is parsed without MessagePack
 * so a peer can route, count and reject a frame before reading its body.
 */
export const FRAME_HEADER_SIZE = 10;

/** Frame types (byte 4 of the header). PROTOCOL.md describes each payload. */
export const FrameType = {
  /** Client's first frame: version, limits, metadata. Stream 0. */
  HELLO: 0x01,
  /** Server's answer to HELLO: version, connection id, limits. Stream 0. */
  WELCOME: 0x02,
  /** Opens a stream: method, deadline, metadata and arguments. */
  CALL: 0x03,
  /** The single result of a call; closes the stream. */
  RESULT: 0x04,
  /** An error; closes the stream (or, on stream 0, the connection). */
  ERROR: 0x05,
  /** One item of a stream. */
  ITEM: 0x06,
  /** End of a stream's items from the sender. */
  END: 0x07,
  /** The sender abandons the stream. */
  CANCEL: 0x08,
  /** Flow control: the sender may be sent `n` more items. */
  CREDIT: 0x09,
  /** Keepalive request, 8 opaque bytes echoed in PONG. Stream 0. */
  PING: 0x0a,
  /** Keepalive answer. Stream 0. */
  PONG: 0x0b,
  /** Graceful close: no new streams; names the last peer stream handled. Stream 0. */
  GOAWAY: 0x0c,
  /**
   * Several items of a stream in one frame: a MessagePack array, each element
   * one item. Sent only to a peer that announced `maxBatchItems`.
   */
  ITEMS: 0x0d,
} as const;

/** One of the {@link FrameType} values. */
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** The highest frame type this version knows; anything above is a protocol error. */
export const MAX_FRAME_TYPE = FrameType.ITEMS;

/**
 * Header flag bits (byte 5). Unknown bits are a protocol error, and so is
 * COMPRESSED on a connection whose handshake did not negotiate compression.
 */
export const FrameFlag = {
  /** More fragments of the same message follow on this stream. */
  FOLLOWS: 0x01,
  /**
   * Reserved, and set on no frame: encryption is not a frame property but
   * the record layer around the frames (PROTOCOL.md, "Processors"). A frame
   * carrying it is a protocol error, as an unnegotiated processing flag.
   */
  ENCRYPTED: 0x02,
  /** The payload is compressed (raw DEFLATE) by the compression processor. */
  COMPRESSED: 0x04,
} as const;

/** Every flag bit this version defines (ENCRYPTED as reserved). */
export const KNOWN_FLAGS = FrameFlag.FOLLOWS | FrameFlag.ENCRYPTED | FrameFlag.COMPRESSED;

/** The flag bits that say how a payload was processed; every fragment of a message carries the same. */
export const PROCESSING_FLAGS = FrameFlag.COMPRESSED;

/** The largest stream id; a side that runs out opens a new connection. */
export const MAX_STREAM_ID = 0xffff_ffff;

const FRAME_TYPE_NAMES: readonly string[] = (() => {
  const names: string[] = [];
  for (const [name, value] of Object.entries(FrameType)) names[value] = name;
  return names;
})();

/** `CALL`, `RESULT`, … or `0x1f` for an unknown type; for error messages. */
export function frameTypeName(type: number): string {
  return FRAME_TYPE_NAMES[type] ?? `0x${type.toString(16).padStart(2, "0")}`;
}

/** Writes a frame header into `target` at `offset`. */
export function writeFrameHeader(target: Uint8Array, offset: number, length: number, type: number, flags: number, streamId: number): void {
  target[offset] = length >>> 24;
  target[offset + 1] = (length >>> 16) & 0xff;
  target[offset + 2] = (length >>> 8) & 0xff;
  target[offset + 3] = length & 0xff;
  target[offset + 4] = type;
  target[offset + 5] = flags;
  target[offset + 6] = streamId >>> 24;
  target[offset + 7] = (streamId >>> 16) & 0xff;
  target[offset + 8] = (streamId >>> 8) & 0xff;
  target[offset + 9] = streamId & 0xff;
}
