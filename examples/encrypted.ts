// Encrypted RPC: `node dist/examples/encrypted.js`. Server and client share a
// 32-byte key (random here; load yours from a secret store). Everything after
// the handshake travels in AES-256-GCM records, the connection metadata
// travels sealed in the handshake, and large payloads are compressed first.
import { randomBytes } from "node:crypto";
import { Client, RpcError } from "rapt/client";
import { compression, crypto } from "rapt/plugin";
import { type CallContext, Server } from "rapt/server";

const key = randomBytes(32);
const keys = { "2026-01": key };

const server = new Server({ processors: [crypto({ keys }), compression()] });
server.register("vault", {
  whoami(this: CallContext) {
    return `token ${String(this.connectionMetadata.token)}, received sealed`;
  },
  store(secret: string) {
    return `stored ${secret.length} characters`;
  },
});
const [address] = await server.listen("127.0.0.1:0");
console.log("server: listening, encryption required");

const client = new Client(address as string, { processors: [crypto({ keys }), compression()], metadata: { token: "s3cr3t" } });
console.log(`client: vault.whoami() -> ${await client.call<string>("vault.whoami")}`);
console.log(`client: vault.store(15000 characters) -> ${await client.call<string>("vault.store", ["attack at dawn ".repeat(1000)])}`);

async function attempt(who: string, other: Client): Promise<void> {
  try {
    await other.call("vault.whoami");
    console.log(`${who}: served (unexpected)`);
  } catch (error) {
    const { code, message } = error as RpcError;
    console.log(`${who}: ${code}: ${message.replace(/^no connection to \S+: /, "")}`);
  }
  await other.close();
}

await attempt("plaintext client", new Client(address as string));
await attempt("client with another key", new Client(address as string, { processors: [crypto({ keys: { "2026-01": randomBytes(32) } })] }));

await client.close();
await server.close();
console.log("done: client and server closed");
