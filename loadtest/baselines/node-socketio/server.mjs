// Baseline for the ioscale load tests: socket.io 4 with @socket.io/redis-adapter or
// @socket.io/redis-streams-adapter (node-redis v4 clients), exposing the same events as
// ioscale-node:
//   /pubsub  join room / leave room (ack {ok}), publish {room, data} (ack {ok})
//            -> msg {room, data} to every member of the room on every node, sender included
//   /        add-message {name, message} -> message-added {name, message, time_ms} to everyone
// Usage: node server.mjs [port]   (env PORT, HOST, REDIS_URL, REDIS_CLUSTER_NODES, ADAPTER)
//   ADAPTER=classic          (default) createAdapter: PUBLISH / PSUBSCRIBE, one channel per namespace
//   ADAPTER=sharded-dynamic  createShardedAdapter(..., { subscriptionMode: "dynamic" }): SPUBLISH /
//                            SSUBSCRIBE, one shard channel per namespace and per public room
//                            (subscribed while the room exists on this server; Redis 7+)
//   ADAPTER=sharded-static   createShardedAdapter(..., { subscriptionMode: "static" })
//   ADAPTER=streams          @socket.io/redis-streams-adapter createAdapter(client): every
//                            broadcast is an XADD (MAXLEN ~ 10000, heartbeats included) to the
//                            one stream "socket.io", read by every server with a blocking XREAD;
//                            one Redis client, no subscriber. socket.io's connectionStateRecovery
//                            is on ({ maxDisconnectionDuration: 120000, skipMiddlewares: true },
//                            the 120 s window of ioscale-node): the CONNECT answer carries a pid,
//                            every broadcast event gets its stream entry id appended as a last
//                            argument (the offset), a socket whose transport drops (not one that
//                            disconnects itself) has its session stored in Redis
//                            (sio:session:<pid>, for the window), and a CONNECT with {pid, offset}
//                            on any server, while that offset is still in the stream, gets the
//                            same sid and pid back, its rooms and the events it missed (written
//                            before the CONNECT answer)
//   REDIS_CLUSTER_NODES=redis://h:p1,redis://h:p2,...  connect to a Redis Cluster with
//                            createCluster({ rootNodes }) instead of REDIS_URL (streams mode works
//                            too, but the stream is one key: one shard carries every broadcast)
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter, createShardedAdapter } from "@socket.io/redis-adapter";
import { createAdapter as createStreamsAdapter } from "@socket.io/redis-streams-adapter";
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
  streams: (client) => createStreamsAdapter(client),
};
if (!(adapterKind in adapters)) {
  console.error(`ADAPTER must be one of ${Object.keys(adapters).join(", ")}, not ${adapterKind}`);
  process.exit(2);
}

const pubClient =
  clusterNodes.length > 0
    ? createCluster({ rootNodes: clusterNodes.map((url) => ({ url })) })
    : createClient({ url: redisUrl });
// The streams adapter reads the stream with XREAD on the same client (blocking reads go to its
// isolation pool), so it needs no subscriber connection.
const streams = adapterKind === "streams";
const subClient = streams ? null : pubClient.duplicate();
const clients = streams ? [pubClient] : [pubClient, subClient];
for (const c of clients) {
  // Without a listener node-redis throws on a connection error and the process dies.
  c.on("error", (e) => console.error("redis error:", e.message));
}
await Promise.all(clients.map((c) => c.connect()));

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
  ...(streams
    ? { connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true } }
    : {}),
});

const ack = (fn, value) => {
  if (typeof fn === "function") fn(value);
};
const validRoom = (room) => typeof room === "string" && room.length > 0 && room.length <= 256;

const pubsub = io.of("/pubsub");
// A recovered socket (socket.recovered === true, streams mode only) is back in its rooms and has
// been sent the events it missed by socket.io itself: the handlers below are all it needs.
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
  const recovery = streams ? " recovery=on" : "";
  console.log(
    `listening bound_addr=${a.address}:${a.port} adapter=${adapterKind}${recovery} redis=${redis}`,
  );
});

const stop = () => {
  io.close();
  Promise.allSettled(clients.map((c) => c.quit())).finally(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
