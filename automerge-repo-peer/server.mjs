// The automerge-repo sync server as its authors ship it (automerge-repo-sync-server's shape): a Repo
// with WebSocket networking and NodeFS storage, sharing nothing unasked (a server only syncs the
// documents a peer names). One addition, for measuring only: /stats tells which documents storage
// has finished writing since the last /reset, so the driver can time "the server has stored them".
// NodeFSStorageAdapter writes with fs.writeFile and never fsyncs: that favours this server.
import http from "node:http"
import { WebSocketServer } from "ws"
import { Repo } from "@automerge/automerge-repo"
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"

const dir = process.argv[2]
const port = Number(process.argv[3] ?? 0)

class CountingStorage extends NodeFSStorageAdapter {
  saved = []
  async save(key, binary) {
    await super.save(key, binary)
    if (key[1] === "snapshot" || key[1] === "incremental") this.saved.push(key[0])
  }
}

// GET /stats?from=N: the ids of documents written since the N-th write (so a poll costs little);
// GET /reset forgets them all.
const storage = new CountingStorage(dir)
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x")
  if (url.pathname === "/reset") storage.saved = []
  const from = Number(url.searchParams.get("from") ?? 0)
  res.setHeader("content-type", "application/json")
  res.end(JSON.stringify({ saved: storage.saved.slice(from), next: storage.saved.length }))
})
server.keepAliveTimeout = 60_000
const wss = new WebSocketServer({ server })
const repo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage,
  peerId: `sync-server-${process.pid}`,
  sharePolicy: async () => false,
})
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n")
})
process.on("SIGTERM", async () => {
  await repo.shutdown()
  process.exit(0)
})
