// Clients through the Compose cluster's load balancer (compose-e2e.sh runs this).
//
// 30 polling-only, 30 WebSocket-only and 30 upgrading socket.io clients connect to
// E2E_BASE (the nginx of compose.yaml on 127.0.0.1:8080), keeping cookies like browsers. The
// cluster must place them on all three nodes and every client must get an ack through its own
// session. Then E2E_DRAIN_CMD stops one node: its clients must reconnect through the proxy,
// and every client must end up on the two others, working.
//
// /pubsub needs a token (IOSCALE_AUTH_NAMESPACES=/pubsub): a client without one must get a
// connect_error `missing_token`; clients with E2E_TOKEN (minted by `ioscale-node token --sub e2e
// --rooms 'e2e:*'`) connect through the proxy, land on several nodes, may join and publish to
// e2e:* rooms only, and a publish reaches every member on every node.
//
// The server API is asked on E2E_API_BASE, a node's admin port: the load balancer refuses it.
//
// Env: E2E_BASE, E2E_API_BASE, E2E_API_KEY, E2E_TOKEN, E2E_DRAIN_CMD, E2E_DRAINED_NODE,
// E2E_CLIENT_MODULES (a node_modules holding socket.io-client).
"use strict";
const crypto = require("node:crypto");
const path = require("node:path");
const { execSync } = require("node:child_process");
const { io } = require(path.join(process.env.E2E_CLIENT_MODULES, "socket.io-client"));

const BASE = process.env.E2E_BASE || "http://127.0.0.1:8080";
function required(name) {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
}
const API_BASE = required("E2E_API_BASE");
const KEY = required("E2E_API_KEY");
const TOKEN = required("E2E_TOKEN");
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

async function sockets(namespace = "/") {
  const r = await fetch(`${API_BASE}/api/v1/sockets?namespace=${encodeURIComponent(namespace)}`, {
    headers: { authorization: `Bearer ${KEY}` },
    signal: AbortSignal.timeout(10000),
  });
  if (r.status !== 200) fail(`GET /api/v1/sockets answered ${r.status}: ${await r.text()}`);
  return (await r.json()).sockets;
}

// Resolves with the socket once connected, or fails with the connect_error message.
function connectTo(nsp, opts) {
  const socket = io(`${BASE}${nsp}`, {
    transports: ["websocket"],
    withCredentials: true,
    forceNew: true,
    reconnection: false,
    timeout: 10000,
    ...opts,
  });
  return new Promise((resolve) => {
    socket.once("connect", () => resolve({ socket }));
    socket.once("connect_error", (e) => {
      socket.close();
      resolve({ error: String(e && e.message) });
    });
  });
}

// The socket's public id (what the API lists): its socket.id is the session id, never shown.
async function publicId(socket) {
  const res = await ack(socket, "whoami");
  if (!res || res.ok !== true || typeof res.id !== "string") fail(`whoami answered ${JSON.stringify(res)}`);
  return res.id;
}

function ack(socket, event, arg) {
  return new Promise((resolve) => {
    socket.timeout(5000).emit(event, arg, (err, res) => {
      if (err) fail(`no ack to ${event} ${JSON.stringify(arg)}: ${err}`);
      resolve(res);
    });
  });
}

// A well-formed HS256 token with the minted token's claims, signed with a key of its own.
function forged() {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const claims = JSON.parse(Buffer.from(TOKEN.split(".")[1], "base64url").toString());
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = crypto.createHmac("sha256", crypto.randomBytes(32)).update(unsigned).digest("base64url");
  return `${unsigned}.${sig}`;
}

// /pubsub through the load balancer: refused without a token, working across nodes with one.
async function pubsub() {
  for (const transports of [["websocket"], ["polling"]]) {
    const anon = await connectTo("/pubsub", { transports });
    if (anon.socket) fail(`/pubsub without a token connected over ${transports}`);
    if (!anon.error.startsWith("missing_token")) fail(`/pubsub without a token: connect_error ${anon.error}, want missing_token`);
    const bad = await connectTo("/pubsub", { transports, auth: { token: forged() } });
    if (bad.socket) fail(`/pubsub with a forged token connected over ${transports}`);
    if (!bad.error.startsWith("bad_signature")) fail(`/pubsub with a forged token: connect_error ${bad.error}, want bad_signature`);
  }
  log("/pubsub refuses clients without a valid token (missing_token, bad_signature)");

  // Members until they sit on at least two nodes (the balancer places each new client at random).
  const members = [];
  let nodes = new Set();
  for (let i = 0; i < 30 && nodes.size < 2; i++) {
    const c = await connectTo("/pubsub", { auth: { token: TOKEN } });
    if (!c.socket) fail(`/pubsub with the minted token: connect_error ${c.error}`);
    const got = [];
    c.socket.on("msg", (m) => got.push(m));
    members.push({ socket: c.socket, got, id: await publicId(c.socket) });
    const placed = new Map((await sockets("/pubsub")).map((s) => [s.id, s.node]));
    nodes = new Set(members.map((m) => placed.get(m.id)));
    if (nodes.has(undefined)) fail(`a /pubsub socket is missing from the API: ${JSON.stringify([...placed])}`);
  }
  if (nodes.size < 2) fail(`30 /pubsub clients all landed on ${[...nodes]}`);
  log(`${members.length} /pubsub clients with a token on nodes ${[...nodes].sort()}`);

  for (const m of members) {
    const r = await ack(m.socket, "join", "e2e:room");
    if (!r || r.ok !== true) fail(`join e2e:room (granted by the token) answered ${JSON.stringify(r)}`);
  }
  const denied = await ack(members[0].socket, "join", "chat:room");
  if (!denied || denied.ok !== false || denied.code !== "forbidden") fail(`join chat:room (not granted) answered ${JSON.stringify(denied)}`);
  const published = await ack(members[0].socket, "publish", { room: "e2e:room", data: { n: 1 } });
  if (!published || published.ok !== true) fail(`publish to e2e:room answered ${JSON.stringify(published)}`);
  await waitFor("every /pubsub member, on every node, to receive the publish", () => members.every((m) => m.got.length >= 1), 10000);
  for (const m of members) {
    const [msg] = m.got;
    if (msg.room !== "e2e:room" || JSON.stringify(msg.data) !== JSON.stringify({ n: 1 })) fail(`received ${JSON.stringify(msg)}`);
  }
  log(`a publish reached all ${members.length} members across ${nodes.size} nodes; chat:room refused (forbidden)`);
  for (const m of members) m.socket.close();
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
  await pubsub();
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
  await Promise.all(clients.map(async (c) => (c.id = await publicId(c.socket))));
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
  const moving = clients.filter((c) => onDrained.has(c.id));
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
  const moved = clients.filter((c) => c.connects !== 1 && !onDrained.has(c.id) && !moving.includes(c));
  if (moved.length) fail(`clients of other nodes were disturbed: ${moved.map((c) => c.name)}`);
  await ackAll(clients, "after");
  log("every client acked after the drain");
  for (const c of clients) c.socket.close();
  console.log("compose e2e: 1 passed, 0 failed");
  process.exit(0);
})().catch((e) => fail(e && e.stack ? e.stack : String(e)));
