// What survives a Redis restart in the Compose stack (compose-e2e.sh runs this around
// `docker compose restart redis`): the CRUD records, their id counter and the chat history,
// which the bundled Redis keeps in its append-only file on the redis-data volume.
//
//   node durability.cjs write STATE_FILE   stores a record and a chat message, notes them
//   node durability.cjs verify STATE_FILE  reads both back through another connection, and a
//                                          new record gets a larger id than any before
//
// Env: E2E_BASE (the load balancer), E2E_CLIENT_MODULES (a node_modules with socket.io-client).
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { io } = require(path.join(process.env.E2E_CLIENT_MODULES, "socket.io-client"));

const BASE = process.env.E2E_BASE || "http://127.0.0.1:8080";
const COLLECTION = "e2edurable";
const TIMEOUT_MS = 10000;

function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

// A client on `/` that has received the chat history (`messages-available`, on connect).
function connect() {
  return new Promise((resolve) => {
    const socket = io(BASE, { transports: ["websocket"], reconnection: false, timeout: TIMEOUT_MS });
    const timer = setTimeout(() => fail(`no chat history from ${BASE} in ${TIMEOUT_MS} ms`), TIMEOUT_MS);
    socket.on("connect_error", (e) => fail(`connect_error: ${e.message}`));
    socket.on("messages-available", (history) => {
      clearTimeout(timer);
      resolve({ socket, history });
    });
  });
}

async function ask(socket, event, data) {
  try {
    return await socket.timeout(TIMEOUT_MS).emitWithAck(event, data);
  } catch (e) {
    return fail(`${event}: ${e.message}`);
  }
}

async function insert(socket, data) {
  const rec = await ask(socket, `${COLLECTION}-insert`, { data });
  if (!rec || rec.ok === false || rec.id === undefined) fail(`insert answered ${JSON.stringify(rec)}`);
  return rec;
}

async function write(stateFile) {
  const { socket } = await connect();
  const mark = crypto.randomBytes(8).toString("hex");
  const rec = await insert(socket, { mark });
  const said = await ask(socket, "add-message", { name: "e2e", message: `durable ${mark}` });
  if (said && said.ok === false) fail(`add-message answered ${JSON.stringify(said)}`);
  socket.close();
  fs.writeFileSync(stateFile, JSON.stringify({ mark, id: Number(rec.id) }));
  console.log(`stored record ${rec.id} and message "durable ${mark}"`);
}

async function verify(stateFile) {
  const { mark, id } = JSON.parse(fs.readFileSync(stateFile, "utf8"));
  const { socket, history } = await connect();
  const found = await ask(socket, `${COLLECTION}-find`, { query: { mark } });
  if (!Array.isArray(found) || found.length !== 1 || Number(found[0].id) !== id) {
    fail(`record ${id} (mark ${mark}) after the restart: ${JSON.stringify(found)}`);
  }
  const texts = (history || []).map((m) => m.message);
  if (!texts.includes(`durable ${mark}`)) fail(`chat history after the restart: ${JSON.stringify(texts)}`);
  const next = await insert(socket, { mark: `${mark}-after` });
  if (!(Number(next.id) > id)) fail(`a new record got id ${next.id}, not above ${id}: an id was reused`);
  socket.close();
  console.log(`record ${id} and the message survived the restart; the next id is ${next.id}`);
}

const [mode, stateFile] = process.argv.slice(2);
if (!stateFile || !["write", "verify"].includes(mode)) fail("usage: durability.cjs write|verify STATE_FILE");
(mode === "write" ? write : verify)(stateFile).then(
  () => process.exit(0),
  (e) => fail(e && e.stack ? e.stack : String(e)),
);
