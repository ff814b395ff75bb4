// Baseline for the ioscale load tests: socket.io 4 with @socket.io/redis-adapter (node-redis v4
// clients), exposing the same events as ioscale-node:
//   /pubsub  join room / leave room (ack {ok}), publish {room, data} (ack {ok})
//            -> msg {room, data} to every member of the room on every node, sender included
//   /        add-message {name, message} -> message-added {name, message, time_ms} to everyone
// Usage: node server.mjs [port]   (env PORT, HOST, REDIS_URL, REDIS_CLUSTER_NODES, ADAPTER)
//   ADAPTER=classic          (default) createAdapter: PUBLISH / PSUBSCRIBE, one channel per namespace
//   ADAPTER=sharded-dynamic  createShardedAdapter(..., { subscriptionMode: "dynamic" }): SPUBLISH /
//                            SSUBSCRIBE, one shard channel per namespace and per public room
//                            (subscribed while the room exists on this server; Redis 7+)
//   ADAPTER=sharded-static   createShardedAdapter(..., { subscriptionMode: "static" })
//   REDIS_CLUSTER_NODES=redis://h:p1,redis://h:p2,...  connect to a Redis Cluster with
//                            createCluster({ rootNodes }) instead of REDIS_URL
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createClient, createCluster } from "redis";

const port = Number(process.argv[2] ?? process.env.PORT ?? 3000);
const host = process.env.HOST ?? "127.0.0.1";
const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const clusterNodes = (process.env.REDIS_CLUSTER_NODES ?? "").split(",").filter((u) => u !== "");
const adapterKind = process.env.ADAPTER ?? "classic";
const adapters = {
  classic: (pub, sub) => createAdapter(pub, sub),
  "sharded-dynamic": (pub, sub) => createShardedAdapter(pub, sub, { subscriptionMode: "dynamic" }),
  "sharded-static": (pub, sub) => createShardedAdapter(pub, sub, { subscriptionMode: "static" }),
};
if (!(adapterKind in adapters)) {
  console.error(`ADAPTER must be one of ${Object.keys(adapters).join(", ")}, not ${adapterKind}`);
  process.exit(2);
}

const pubClient =
  clusterNodes.length > 0
    ? createCluster({ rootNodes: clusterNodes.map((url) => ({ url })) })
    : createClient({ url: redisUrl });
const subClient = pubClient.duplicate();
for (const c of [pubClient, subClient]) {
  // Without a listener node-redis throws on a connection error and the process dies.
  c.on("error", (e) => console.error("redis error:", e.message));
}
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200).end("ok");
  }
});
const io = new Server(httpServer, {
  adapter: adapters[adapterKind](pubClient, subClient),
  // Same limits as ioscale-node's defaults.
  maxHttpBufferSize: 1e6,
  pingInterval: 25000,
  pingTimeout: 20000,
});

const ack = (fn, value) => {
  if (typeof fn === "function") fn(value);
};
const validRoom = (room) => typeof room === "string" && room.length > 0 && room.length <= 256;

const pubsub = io.of("/pubsub");
pubsub.on("connection", (socket) => {
  socket.on("join", (room, fn) => {
    if (!validRoom(room)) return ack(fn, { error: "room must be 1-256 characters" });
    socket.join(room);
    ack(fn, { ok: true });
  });
  socket.on("leave", (room, fn) => {
    socket.leave(room);
    ack(fn, { ok: true });
  });
  socket.on("publish", (p, fn) => {
    if (!p || !validRoom(p.room)) return ack(fn, { error: "publish expects {room, data}" });
    pubsub.to(p.room).emit("msg", { room: p.room, data: p.data });
    ack(fn, { ok: true });
  });
});

io.on("connection", (socket) => {
  socket.on("add-message", (m, fn) => {
    if (!m || typeof m.name !== "string" || typeof m.message !== "string") {
      return ack(fn, { error: "add-message expects {name, message}" });
    }
    io.emit("message-added", { name: m.name, message: m.message, time_ms: Date.now() });
    ack(fn, { ok: true });
  });
});

httpServer.listen(port, host, () => {
  const a = httpServer.address();
  const redis = clusterNodes.length > 0 ? `cluster of ${clusterNodes.length}` : "standalone";
  console.log(`listening bound_addr=${a.address}:${a.port} adapter=${adapterKind} redis=${redis}`);
});

const stop = () => {
  io.close();
  Promise.allSettled([pubClient.quit(), subClient.quit()]).finally(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
