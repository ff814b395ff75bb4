//! The soak's side workload on the official socket.io-client (loadtest/soak.sh runs it next to
//! the load generator's fan-out): clients that come and go, and CRUD through Backbone.sync.
//
// Usage: node soak-side.mjs --url http://lb:port --duration-s S --churners N --crud-clients M
//          --report report.json
//
// - A churner connects a fresh socket to /pubsub, joins a room of its own pick (acked), holds
//   it 0.5-2.5 s, leaves it (acked), disconnects, and starts again: clients connecting and
//   leaving all the time, so every node's per-socket state is made and unmade thousands of
//   times.
// - A CRUD client keeps a socket on `/` (socket.io-client's reconnection on; a new one every
//   500 records, under the server's per-connection cap) and runs create, read, update, read,
//   delete on a record of its own, each with an ack, checking every answer: a read must give
//   back what the last acknowledged write wrote.
//
// Every outcome is counted; nothing is retried silently. An operation left unanswered is
// `cut` when its socket lost its connection meanwhile (a node killed under it: the request or
// its answer died with the node) and `unanswered` otherwise, which the soak treats as a
// failure. The report is written at the end, or on SIGTERM.

import { io } from "socket.io-client";
import { writeFileSync } from "node:fs";

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .reduce((pairs, a, i, all) => (a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const url = args.url ?? "http://127.0.0.1:3000";
const durationMs = Number(args["duration-s"] ?? 60) * 1000;
const churners = Number(args.churners ?? 20);
const crudClients = Number(args["crud-clients"] ?? 4);
const reportPath = args.report ?? "soak-side.json";
const OP_TIMEOUT_MS = 10_000;
const RECORDS_PER_CONNECTION = 500;

const counts = {
  churn: { sessions: 0, connected: 0, connect_errors: {}, joins_ok: 0, leaves_ok: 0, refused: {}, cut: 0, unanswered: 0 },
  crud: { ops_ok: 0, by_op: {}, wrong: 0, refused: {}, cut: 0, unanswered: 0, first_wrong: null },
};
const started = Date.now();
let stopping = false;

function log(...a) {
  process.stderr.write(`[soak-side ${new Date().toISOString()}] ${a.join(" ")}\n`);
}

function bump(map, key) {
  map[key] = (map[key] ?? 0) + 1;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the socket's connect, or rejects with its connect_error (or a timeout). */
function connected(socket) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("timeout")), OP_TIMEOUT_MS);
    socket.once("connect", () => (clearTimeout(t), resolve()));
    socket.once("connect_error", (e) => (clearTimeout(t), reject(e)));
  });
}

/**
 * One acknowledged request: `{ok, value}` with the ack's first argument, or `{ok: false,
 * why: "cut" | "unanswered"}` when none came in time (`cut` if the socket lost its connection
 * meanwhile).
 */
async function request(socket, event, payload) {
  let lost = false;
  const onLost = () => (lost = true);
  socket.once("disconnect", onLost);
  try {
    const value = await socket.timeout(OP_TIMEOUT_MS).emitWithAck(event, payload);
    return { ok: true, value };
  } catch {
    return { ok: false, why: lost || !socket.connected ? "cut" : "unanswered" };
  } finally {
    socket.off("disconnect", onLost);
  }
}

async function churner(c) {
  for (let round = 0; !stopping; round++) {
    counts.churn.sessions++;
    const socket = io(`${url}/pubsub`, { transports: ["websocket"], forceNew: true, reconnection: false });
    try {
      await connected(socket);
      counts.churn.connected++;
    } catch (e) {
      bump(counts.churn.connect_errors, e.message || "error");
      socket.close();
      await sleep(500);
      continue;
    }
    const room = `soak-churn-${(c * 7 + round) % 64}`;
    for (const event of ["join", "leave"]) {
      const r = await request(socket, event, room);
      if (!r.ok) {
        counts.churn[r.why]++;
        break;
      }
      if (r.value?.ok !== true) {
        bump(counts.churn.refused, r.value?.code ?? "no_code");
        break;
      }
      counts.churn[event === "join" ? "joins_ok" : "leaves_ok"]++;
      if (event === "join") await sleep(500 + Math.random() * 2000);
    }
    socket.close();
    await sleep(50);
  }
}

function wrong(what) {
  counts.crud.wrong++;
  counts.crud.first_wrong ??= what;
  log("wrong answer:", what);
}

/** One CRUD step: its answer, or null after counting why there was none or it was refused. */
async function crud(socket, op, signature, item) {
  const r = await request(socket, op, item === undefined ? { signature } : { signature, item });
  if (!r.ok) {
    counts.crud[r.why]++;
    return null;
  }
  if (r.value && typeof r.value === "object" && r.value.ok === false) {
    bump(counts.crud.refused, `${op}:${r.value.code ?? "no_code"}`);
    return null;
  }
  counts.crud.ops_ok++;
  bump(counts.crud.by_op, op);
  return r.value;
}

/** A CRUD client's connection, fresh: the server caps the records one connection creates. */
async function crudSocket() {
  const socket = io(url, { transports: ["websocket"], forceNew: true });
  await connected(socket).catch(() => {});
  return socket;
}

async function crudClient(c) {
  let socket = await crudSocket();
  let createdHere = 0;
  for (let k = 0; !stopping; k++) {
    // A connection may create --max-records-per-client records over its life (1,000 by
    // default); a client that keeps creating comes back as a new one well before that.
    if (createdHere >= RECORDS_PER_CONNECTION) {
      socket.close();
      socket = await crudSocket();
      createdHere = 0;
    }
    if (!socket.connected) {
      await sleep(200);
      continue;
    }
    const title = `soak-${c}-${k}`;
    const created = await crud(socket, "create", { endPoint: "soak" }, { title, n: k });
    if (!created) {
      // Refused or cut: a client backs off before it tries again.
      await sleep(500);
      continue;
    }
    createdHere++;
    if (created.title !== title || created.id === undefined) {
      wrong(`create gave ${JSON.stringify(created)}`);
      continue;
    }
    const endPoint = `soak/${created.id}`;
    const read = await crud(socket, "read", { endPoint });
    if (read && read.n !== k) wrong(`read after create of ${endPoint}: ${JSON.stringify(read)}`);
    const updated = await crud(socket, "update", { endPoint }, { id: created.id, title, n: k + 1 });
    if (updated && updated.success !== true) wrong(`update of ${endPoint}: ${JSON.stringify(updated)}`);
    if (updated) {
      const again = await crud(socket, "read", { endPoint });
      if (again && again.n !== k + 1) wrong(`read after update of ${endPoint}: ${JSON.stringify(again)}`);
    }
    const deleted = await crud(socket, "delete", { endPoint }, { id: created.id });
    if (deleted && deleted.success !== true) wrong(`delete of ${endPoint}: ${JSON.stringify(deleted)}`);
    await sleep(100);
  }
  socket.close();
}

function finish() {
  counts.duration_s = (Date.now() - started) / 1000;
  writeFileSync(reportPath, JSON.stringify(counts, null, 2) + "\n");
  log("report:", JSON.stringify(counts));
}

process.on("SIGTERM", () => (stopping = true));
setTimeout(() => (stopping = true), durationMs);
log(`${churners} churners, ${crudClients} CRUD clients on ${url} for ${durationMs / 1000} s`);
await Promise.all([
  ...Array.from({ length: churners }, (_, c) => churner(c)),
  ...Array.from({ length: crudClients }, (_, c) => crudClient(c)),
]);
finish();
process.exit(0);
