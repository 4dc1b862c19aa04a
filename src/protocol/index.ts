export { RpcError, ErrorCode, isErrorCode } from "./rpc-error.js";
export { FRAME_HEADER_SIZE, FrameType, FrameFlag, MAX_STREAM_ID, frameTypeName, writeFrameHeader } from "./frame.js";
export { FrameDecoder, type FrameSink, type FrameDecoderOptions } from "./frame-decoder.js";
export { BulkBufferPool, type BulkBufferPoolOptions, POOLED_MIN_BYTES, bulkBuffers } from "./bulk-buffer-pool.js";
export { FrameWriter, type FrameSocket, type FrameWriterOptions, type MessageBytes, type WriterOutput } from "./frame-writer.js";
export { RecordDecoder, type RecordSink, type RecordDecoderOptions } from "./record-decoder.js";
export { MessageAssembler, type MessageAssemblerOptions } from "./message-assembler.js";
export { MsgpackCodec, EXT_BIGINT, type CodecLimits } from "./msgpack-codec.js";
export {
  PROTOCOL_VERSION,
  SUPPORTED_VERSIONS,
  type Metadata,
  type Limits,
  type Hello,
  type Welcome,
  type CallHead,
  type ErrorBody,
  type Goaway,
} from "./wire-messages.js";
export {
  Connection,
  ConnectionState,
  DEFAULT_LIMITS,
  HANDSHAKE_MAX_FRAME_SIZE,
  type ConnectionOptions,
  type ConnectionOwner,
  type StreamReceiver,
} from "./connection.js";
export { Keepalive, DEFAULT_KEEPALIVE, type KeepaliveOptions } from "./keepalive.js";
export { parseEndpoint, formatEndpoint, type Endpoint } from "./endpoint.js";
export type { Processor, ProcessorKind, ProcessorOffer, ProcessorAgreement, PayloadTransform, RecordTransform } from "./processor.js";
export { CallKind, DEFAULT_STREAM_WINDOW } from "./wire-messages.js";
export { Channel, type ChannelClose, type ChannelTransport } from "./channel.js";
export { InboundStream, type InboundHost } from "./inbound-stream.js";
export { ItemSizeMemory, ITEM_SIZE_MEMORY_METHODS } from "./item-size-memory.js";
export { OutboundPump, type PumpSink } from "./outbound-pump.js";
export { encodeCallPayload, readCallPayload, type CallPayload, MAX_TIMEOUT_MS } from "./call-payload.js";
export { encodeCredit, decodeCredit } from "./credit.js";
