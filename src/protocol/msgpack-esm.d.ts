// @msgpack/msgpack has no "exports" map, so a bare import from ESM resolves
// to its CommonJS build, which Node's CommonJS export lexer then scans (about
// 4 MB of RSS for every rapt process). rapt imports its ES module build
// instead; the types are the package's own.
declare module "@msgpack/msgpack/dist.esm/index.mjs" {
  export * from "@msgpack/msgpack";
}
