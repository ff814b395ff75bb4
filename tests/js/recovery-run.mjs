// Session recovery seen by real socket.io-client subscribers: N subscribers (through the load
// balancer, with the ioscale-recovery helper) in one /pubsub room and publishers on given nodes
// at a fixed rate. The test that runs it breaks something meanwhile (kills a node, or tells
// this script to cut clients' connections). Prints one JSON object per line on stdout:
// {"ready": ..} once every subscriber is in the room, {"progress": n} as publishes are acked,
// {"dropped": k} after a cut (see "cut" on stdin), and {"report": ..} at the end.
//
// argv[2]: JSON {lb, publishers: [url], room, subscribers, rate, count, settleMs, transports}.
// stdin: "exit" ends it after the report; "cut K" destroys the TCP connection of K subscribers (no close handshake, as a
// network drop looks to the client; the node sees the connection fail when it next writes).

import { createInterface } from "node:readline";
import { io } from "socket.io-client";
import { withRecovery } from "../../clients/js/index.js";

const cfg = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const log = (...a) => process.stderr.write(a.join(" ") + "\n");
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms))]);

function subscriber(i) {
  const s = withRecovery(
    io(`${cfg.lb}/pubsub`, {
      autoConnect: false,
      transports: cfg.transports,
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
    }),
  );
  const sub = { i, s, got: [], outcomes: [], connects: 0, disconnects: [], ready: null };
  sub.ready = new Promise((resolve, reject) => {
    s.on("ioscale:recovery", async (info) => {
      sub.outcomes.push(info);
      if (sub.outcomes.length > 1) return;
      try {
        const joined = await withTimeout(s.emitWithAck("join", cfg.room), 10000, "join");
        if (!joined.ok) throw new Error(`join refused: ${JSON.stringify(joined)}`);
        const set = await withTimeout(s.emitWithAck("set-data", { mark: i }), 10000, "set-data");
        if (!set.ok) throw new Error(`set-data refused: ${JSON.stringify(set)}`);
        resolve(info.id);
      } catch (e) {
        reject(e);
      }
    });
  });
  s.on("connect", () => sub.connects++);
  s.on("disconnect", (reason) => {
    sub.disconnects.push(reason);
    log(`subscriber ${i} disconnected: ${reason}`);
  });
  s.on("connect_error", (e) => log(`subscriber ${i} connect_error ${e.message}`));
  s.on("msg", (m) => sub.got.push(m.data));
  s.connect();
  return sub;
}

function publisher(url) {
  return io(`${url}/pubsub`, { transports: ["websocket"], reconnection: false });
}

async function publish(pubs) {
  const acks = [];
  const failures = [];
  const perTick = Math.max(1, Math.round(cfg.rate / 100));
  let next = 0;
  let acked = 0;
  const started = Date.now();
  while (next < cfg.count) {
    for (let k = 0; k < perTick && next < cfg.count; k++, next++) {
      const p = next % pubs.length;
      const seq = Math.floor(next / pubs.length);
      const ack = withTimeout(
        pubs[p].emitWithAck("publish", { room: cfg.room, data: { p, seq } }),
        10000,
        "publish",
      )
        .then((a) => {
          if (!a || !a.ok) failures.push({ p, seq, answer: a });
          if (++acked % 250 === 0) out({ progress: acked });
        })
        .catch((e) => failures.push({ p, seq, error: e.message }));
      acks.push(ack);
    }
    const due = started + (next / cfg.rate) * 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
  }
  await Promise.all(acks);
  return failures;
}

/// Per publisher: how many of its messages a subscriber lacks, got twice, or got out of order.
function account(got, publishers, perPublisher) {
  const r = { received: got.length, missing: 0, duplicates: 0, reordered: 0 };
  for (let p = 0; p < publishers; p++) {
    const seqs = got.filter((d) => d.p === p).map((d) => d.seq);
    const seen = new Set();
    let last = -1;
    for (const q of seqs) {
      if (seen.has(q)) r.duplicates++;
      else if (q < last) r.reordered++;
      seen.add(q);
      last = Math.max(last, q);
    }
    r.missing += perPublisher[p] - seen.size;
  }
  return r;
}

function cut(subs, k) {
  let dropped = 0;
  for (const sub of subs.slice(0, k)) {
    // engine.io-client's WebSocket transport keeps the `ws` socket; its `_socket` is the TCP
    // connection. Destroyed without a close frame: the client sees its transport fail.
    const tcp = sub.s.io.engine?.transport?.ws?._socket;
    if (tcp) {
      tcp.destroy();
      dropped++;
    }
  }
  out({ dropped });
}

async function main() {
  const subs = Array.from({ length: cfg.subscribers }, (_, i) => subscriber(i));
  const ids = await withTimeout(Promise.all(subs.map((s) => s.ready)), 30000, "subscribers ready");
  const pubs = cfg.publishers.map(publisher);
  await withTimeout(
    Promise.all(pubs.map((p) => new Promise((r) => p.once("connect", r)))),
    10000,
    "publishers connected",
  );
  createInterface({ input: process.stdin }).on("line", (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === "cut") cut(subs, Number(arg));
    if (cmd === "exit") exitRequested();
  });
  out({ ready: true, ids });
  const failures = await publish(pubs);
  const perPublisher = pubs.map((_, p) => Math.floor(cfg.count / pubs.length) + (p < cfg.count % pubs.length ? 1 : 0));
  const total = cfg.count;
  const deadline = Date.now() + cfg.settleMs;
  while (Date.now() < deadline && subs.some((s) => new Set(s.got.map((d) => `${d.p}:${d.seq}`)).size < total)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 300)); // late duplicates, if any, arrive too
  const report = {
    failures,
    subscribers: subs.map((s) => ({
      i: s.i,
      connects: s.connects,
      disconnects: s.disconnects,
      outcomes: s.outcomes.map((o) => ({ recovered: o.recovered, reason: o.reason, id: o.id, missed: o.missed })),
      ...account(s.got, pubs.length, perPublisher),
    })),
  };
  out({ report });
  // Connected until the test has looked at the cluster ("exit" on stdin, or stdin closed).
  await new Promise((r) => {
    exitRequested = r;
    process.stdin.on("end", r);
  });
  subs.forEach((s) => s.s.close());
  pubs.forEach((p) => p.close());
  process.exit(0);
}

let exitRequested = () => {};

main().catch((e) => {
  log(`recovery-run failed: ${e.stack || e}`);
  out({ error: String(e.message || e) });
  process.exit(1);
});
