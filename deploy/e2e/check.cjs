// Clients through the Compose cluster's load balancer (compose-e2e.sh runs this).
//
// 30 polling-only, 30 WebSocket-only and 30 upgrading socket.io clients connect to
// E2E_BASE (the nginx of compose.yaml on 127.0.0.1:8080), keeping cookies like browsers. The
// cluster must place them on all three nodes and every client must get an ack through its own
// session. Then E2E_DRAIN_CMD stops one node: its clients must reconnect through the proxy,
// and every client must end up on the two others, working.
//
// Env: E2E_BASE, E2E_API_KEY, E2E_DRAIN_CMD, E2E_DRAINED_NODE, E2E_CLIENT_MODULES (a
// node_modules holding socket.io-client).
"use strict";
const path = require("node:path");
const { execSync } = require("node:child_process");
const { io } = require(path.join(process.env.E2E_CLIENT_MODULES, "socket.io-client"));

const BASE = process.env.E2E_BASE || "http://127.0.0.1:8080";
const KEY = process.env.E2E_API_KEY || "change-me";
const DRAINED = process.env.E2E_DRAINED_NODE || "node2";
const PER_KIND = 30;
const KINDS = { polling: ["polling"], websocket: ["websocket"], upgrade: ["polling", "websocket"] };

const log = (...a) => console.log(`[check ${new Date().toISOString()}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

async function waitFor(what, pred, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await sleep(100);
  }
  fail(`timed out after ${ms} ms waiting for ${what}`);
}

async function sockets() {
  const r = await fetch(`${BASE}/api/v1/sockets?namespace=%2F`, {
    headers: { authorization: `Bearer ${KEY}` },
    signal: AbortSignal.timeout(10000),
  });
  if (r.status !== 200) fail(`GET /api/v1/sockets answered ${r.status}: ${await r.text()}`);
  return (await r.json()).sockets;
}

function perNode(list) {
  const out = {};
  for (const s of list) out[s.node] = (out[s.node] || 0) + 1;
  return out;
}

async function ackAll(clients, tag) {
  await Promise.all(
    clients.map(
      (c) =>
        new Promise((resolve) => {
          c.socket.timeout(5000).emit("set-data", { e2e: tag }, (err, res) => {
            if (err || !res || res.ok !== true) fail(`${c.name}: no set-data ack (${err || JSON.stringify(res)})`);
            resolve();
          });
        }),
    ),
  );
}

(async () => {
  const clients = [];
  for (const [kind, transports] of Object.entries(KINDS)) {
    for (let i = 0; i < PER_KIND; i++) {
      const socket = io(BASE, {
        transports,
        upgrade: transports.length > 1,
        withCredentials: true,
        forceNew: true,
        reconnectionDelay: 100,
        reconnectionDelayMax: 1000,
      });
      const c = { name: `${kind}-${i}`, kind, socket, connects: 0, errors: [] };
      socket.on("connect", () => (c.connects += 1));
      socket.on("connect_error", (e) => c.errors.push(String(e && e.message)));
      clients.push(c);
    }
  }
  await waitFor("every client to connect", () => clients.every((c) => c.socket.connected), 30000);
  await waitFor(
    "upgrading clients to reach websocket",
    () => clients.filter((c) => c.kind === "upgrade").every((c) => c.socket.io.engine.transport.name === "websocket"),
    15000,
  );
  let list = await sockets();
  let counts = perNode(list);
  log(`connected ${clients.length} clients, per node ${JSON.stringify(counts)}`);
  if (list.length !== clients.length) fail(`cluster lists ${list.length} sockets, want ${clients.length}`);
  if (Object.keys(counts).length !== 3) fail(`clients must spread over 3 nodes: ${JSON.stringify(counts)}`);
  await sleep(3000);
  const dropped = clients.filter((c) => !c.socket.connected || c.connects !== 1);
  if (dropped.length) fail(`clients dropped before the drain: ${dropped.map((c) => c.name)}`);
  await ackAll(clients, "before");
  log("every client acked through its session");

  const onDrained = new Set(list.filter((s) => s.node === DRAINED).map((s) => s.id));
  const moving = clients.filter((c) => onDrained.has(c.socket.id));
  log(`draining ${DRAINED} (${moving.length} clients): ${process.env.E2E_DRAIN_CMD}`);
  const t0 = Date.now();
  execSync(process.env.E2E_DRAIN_CMD, { stdio: "inherit" });
  await waitFor(
    "the drained node's clients to reconnect",
    () => moving.every((c) => c.socket.connected && c.connects >= 2),
    60000,
  );
  log(`moved clients reconnected ${Date.now() - t0} ms after the stop began`);
  list = await sockets();
  counts = perNode(list);
  log(`after the drain, per node ${JSON.stringify(counts)}`);
  if (list.length !== clients.length) fail(`cluster lists ${list.length} sockets after the drain`);
  if (counts[DRAINED]) fail(`${DRAINED} still holds sockets`);
  const moved = clients.filter((c) => c.connects !== 1 && !onDrained.has(c.socket.id) && !moving.includes(c));
  if (moved.length) fail(`clients of other nodes were disturbed: ${moved.map((c) => c.name)}`);
  await ackAll(clients, "after");
  log("every client acked after the drain");
  for (const c of clients) c.socket.close();
  console.log("compose e2e: 1 passed, 0 failed");
  process.exit(0);
})().catch((e) => fail(e && e.stack ? e.stack : String(e)));
