// Unit tests of ioscale-recovery against a real socket.io-client Socket driven by a fake Manager (no server).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "socket.io-client";
import { withRecovery, RECOVERY_EVENT } from "../index.js";

const CONNECT = 0;
const EVENT = 2;

// Stands in for socket.io-client's Manager: a Socket only subscribes to open/packet/error/close,
// checks _readyState/_reconnecting in connect(), and hands outgoing packets to _packet().
class FakeManager {
  constructor() {
    this.handlers = {};
    this.sent = [];
    this._readyState = "closed";
    this._reconnecting = false;
  }
  on(ev, fn) {
    (this.handlers[ev] ||= []).push(fn);
  }
  off(ev, fn) {
    this.handlers[ev] = (this.handlers[ev] || []).filter((h) => h !== fn);
  }
  fire(ev, ...args) {
    for (const fn of [...(this.handlers[ev] || [])]) fn(...args);
  }
  open() {
    this._readyState = "open";
  }
  _packet(pkt) {
    this.sent.push(pkt);
  }
  _destroy() {}
  // The test-side "server":
  connects(nsp = "/") {
    return this.sent.filter((p) => p.type === CONNECT && p.nsp === nsp);
  }
  lastAuth(nsp = "/") {
    return this.connects(nsp).at(-1).data;
  }
  accept(sid, nsp = "/") {
    this.fire("packet", { type: CONNECT, nsp, data: { sid } });
  }
  event(args, { nsp = "/", id } = {}) {
    this.fire("packet", { type: EVENT, nsp, data: args, id });
  }
  verdict(info, nsp = "/") {
    this.event([RECOVERY_EVENT, { reason: null, missed: 0, ...info }], { nsp });
  }
  drop() {
    this.fire("close", "transport close");
  }
  reopen() {
    this.fire("open");
  }
}

function setup(opts = {}, nsp = "/", manager = new FakeManager()) {
  const socket = withRecovery(new Socket(manager, nsp, opts));
  return { manager, socket };
}

// First connection of a session: CONNECT, server accepts, verdict "new" with token S1.
function startSession({ manager, socket }, session = "S1") {
  socket.connect();
  manager.accept("sid-1", socket.nsp);
  manager.verdict({ recovered: false, session, id: "pub-1", reason: "new" }, socket.nsp);
}

const fresh = { session: null, offset: null };

test("object auth is merged on every CONNECT and the app can still change it", () => {
  const appAuth = { token: "jwt-1" };
  const ctx = setup({ auth: appAuth });
  startSession(ctx);
  assert.deepEqual(ctx.manager.lastAuth(), { token: "jwt-1", ioscale_recovery: fresh });
  assert.deepEqual(appAuth, { token: "jwt-1" }, "the app's object is not modified");
  assert.equal(ctx.socket.auth, appAuth, "socket.auth stays what the app set");

  ctx.manager.event(["chat", "hi", { ioscale_offset: "o1" }]);
  ctx.socket.auth.token = "jwt-2"; // in-place change, as apps do before a reconnection
  ctx.manager.drop();
  ctx.manager.reopen();
  assert.deepEqual(ctx.manager.lastAuth(), {
    token: "jwt-2",
    ioscale_recovery: { session: "S1", offset: "o1" },
  });

  ctx.socket.auth = { token: "jwt-3" }; // reassignment
  ctx.manager.drop();
  ctx.manager.reopen();
  assert.deepEqual(ctx.manager.lastAuth(), {
    token: "jwt-3",
    ioscale_recovery: { session: "S1", offset: "o1" },
  });
});

test("function auth is called on every CONNECT and merged, also when it answers late", async () => {
  let calls = 0;
  const ctx = setup({ auth: (cb) => cb({ token: `t${++calls}` }) });
  startSession(ctx);
  assert.deepEqual(ctx.manager.lastAuth(), { token: "t1", ioscale_recovery: fresh });

  ctx.manager.event(["chat", "a", { ioscale_offset: "o1" }]);
  ctx.manager.drop();
  // Asynchronous auth: the recovery fields must be the ones current when the CONNECT is sent.
  ctx.socket.auth = (cb) => setTimeout(() => cb({ token: "late" }), 5);
  ctx.manager.reopen();
  assert.equal(ctx.manager.connects().length, 1, "nothing sent before the callback answers");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(ctx.manager.lastAuth(), {
    token: "late",
    ioscale_recovery: { session: "S1", offset: "o1" },
  });
});

test("no auth or a non-object auth still sends the opt-in", () => {
  const ctx = setup();
  ctx.socket.connect();
  assert.deepEqual(ctx.manager.lastAuth(), { ioscale_recovery: fresh });

  const ctx2 = setup({ auth: (cb) => cb("not-an-object") });
  ctx2.socket.connect();
  assert.deepEqual(ctx2.manager.lastAuth(), { ioscale_recovery: fresh });
});

test("the offset argument is stripped before on() and onAny() listeners and remembered", () => {
  const ctx = setup();
  startSession(ctx);
  const seen = [];
  const any = [];
  ctx.socket.on("chat", (...args) => seen.push(args));
  ctx.socket.onAny((...args) => any.push(args));

  ctx.manager.event(["chat", "hi", { a: 1 }, { ioscale_offset: "o7" }]);
  assert.deepEqual(seen, [["hi", { a: 1 }]]);
  assert.deepEqual(any, [["chat", "hi", { a: 1 }]]);
  assert.equal(ctx.socket.ioscale.offset, "o7");

  ctx.manager.event(["chat", { ioscale_offset: "o8" }]); // marker as the only argument
  assert.deepEqual(seen.at(-1), []);
  assert.deepEqual(any.at(-1), ["chat"]);
  assert.equal(ctx.socket.ioscale.offset, "o8");
});

test("events without the marker pass through untouched", () => {
  const ctx = setup();
  startSession(ctx);
  ctx.manager.event(["chat", "x", { ioscale_offset: "o1" }]);
  const seen = [];
  ctx.socket.on("plain", (...args) => seen.push(args));

  const lookalikes = [
    ["plain", "no marker"],
    ["plain", { ioscale_offset: "o9", other: 1 }], // extra key: app data
    ["plain", { ioscale_offset: 9 }], // not a string: app data
    ["plain", [{ ioscale_offset: "o9" }]], // array, not the marker object
    ["plain", null],
    ["plain"],
  ];
  for (const args of lookalikes) ctx.manager.event(args.map((a) => structuredClone(a)));
  assert.deepEqual(seen, lookalikes.map((args) => args.slice(1)));
  assert.equal(ctx.socket.ioscale.offset, "o1", "lookalikes do not move the offset");

  // An event with an ack: socket.io-client appends the ack function, which is passed on.
  let ack;
  ctx.socket.on("ask", (q, cb) => (ack = cb));
  ctx.manager.event(["ask", "q?"], { id: 4 });
  assert.equal(typeof ack, "function");
  ack("yes");
  assert.deepEqual(ctx.manager.sent.at(-1), { type: 3, id: 4, data: ["yes"], nsp: "/" });
  assert.equal(ctx.socket.ioscale.offset, "o1");
});

test("a non-recovered verdict keeps the new session and resets the offset", () => {
  const ctx = setup({ auth: { token: "jwt" } });
  startSession(ctx, "S1");
  ctx.manager.event(["chat", "m1", { ioscale_offset: "o3" }]);
  assert.deepEqual({ ...ctx.socket.ioscale }, { session: "S1", offset: "o3", id: "pub-1" });

  ctx.manager.drop();
  ctx.manager.reopen();
  ctx.manager.accept("sid-2");
  ctx.manager.verdict({ recovered: false, session: "S2", id: "pub-2", reason: "expired" });
  assert.equal(ctx.socket.recovered, false);
  assert.deepEqual({ ...ctx.socket.ioscale }, { session: "S2", offset: null, id: "pub-2" });

  ctx.manager.drop();
  ctx.manager.reopen();
  assert.deepEqual(ctx.manager.lastAuth(), {
    token: "jwt",
    ioscale_recovery: { session: "S2", offset: null },
  });
});

test("a recovered verdict keeps the offset, replaces the session and replays advance it", () => {
  const ctx = setup();
  startSession(ctx, "S1");
  assert.equal(ctx.socket.recovered, false);
  ctx.manager.event(["chat", "m1", { ioscale_offset: "o1" }]);
  ctx.manager.drop();
  ctx.manager.reopen();
  ctx.manager.accept("sid-2");
  assert.equal(ctx.socket.recovered, false, "unknown until the verdict arrives");

  ctx.manager.verdict({ recovered: true, session: "S1b", id: "pub-1", missed: 1 });
  assert.equal(ctx.socket.recovered, true);
  assert.deepEqual({ ...ctx.socket.ioscale }, { session: "S1b", offset: "o1", id: "pub-1" });
  ctx.manager.event(["chat", "missed", { ioscale_offset: "o2" }]);
  assert.equal(ctx.socket.ioscale.offset, "o2");

  ctx.manager.drop();
  ctx.manager.reopen();
  assert.deepEqual(ctx.manager.lastAuth().ioscale_recovery, { session: "S1b", offset: "o2" });
  ctx.manager.accept("sid-3");
  assert.equal(ctx.socket.recovered, false, "reset by the next CONNECT");
});

test("the app still receives ioscale:recovery, with the state already updated", () => {
  const ctx = setup();
  const got = [];
  ctx.socket.on(RECOVERY_EVENT, (info) => got.push([info, ctx.socket.ioscale, ctx.socket.recovered]));
  const anyNames = [];
  ctx.socket.onAny((name) => anyNames.push(name));
  startSession(ctx, "S1");
  assert.equal(got.length, 1);
  assert.deepEqual(got[0][0], { recovered: false, session: "S1", id: "pub-1", reason: "new", missed: 0 });
  assert.deepEqual({ ...got[0][1] }, { session: "S1", offset: null, id: "pub-1" });
  assert.equal(got[0][2], false);
  assert.deepEqual(anyNames, [RECOVERY_EVENT]);
});

test("events buffered before CONNECT are stripped when socket.io-client drains them", () => {
  const ctx = setup();
  const seen = [];
  ctx.socket.on("early", (...args) => seen.push(args));
  ctx.socket.connect();
  // Arrives before the CONNECT answer: socket.io-client freezes and buffers it.
  ctx.manager.event(["early", 1, { ioscale_offset: "o5" }]);
  assert.deepEqual(seen, []);
  ctx.manager.accept("sid-1");
  assert.deepEqual(seen, [[1]]);
  assert.equal(ctx.socket.ioscale.offset, "o5");
});

test("each namespace socket keeps its own session and offset", () => {
  const manager = new FakeManager();
  const main = setup({}, "/", manager);
  const admin = setup({}, "/admin", manager);
  startSession(main, "S-main");
  startSession(admin, "S-admin");
  manager.event(["chat", { ioscale_offset: "m1" }]);
  manager.event(["audit", { ioscale_offset: "a1" }], { nsp: "/admin" });
  manager.drop();
  manager.reopen();
  assert.deepEqual(manager.lastAuth("/").ioscale_recovery, { session: "S-main", offset: "m1" });
  assert.deepEqual(manager.lastAuth("/admin").ioscale_recovery, { session: "S-admin", offset: "a1" });
});

test("the state snapshot is read-only, a second wrap is a no-op, non-sockets are refused", () => {
  const ctx = setup({ auth: { token: "t" } });
  assert.equal(withRecovery(ctx.socket), ctx.socket);
  startSession(ctx);
  assert.throws(() => {
    ctx.socket.ioscale.session = "forged"; // modules are strict: writing a frozen object throws
  }, TypeError);
  assert.equal(ctx.socket.ioscale.session, "S1");
  ctx.manager.drop();
  ctx.manager.reopen();
  assert.deepEqual(ctx.manager.lastAuth(), { token: "t", ioscale_recovery: { session: "S1", offset: null } });
  assert.throws(() => withRecovery({}), TypeError);
  assert.throws(() => withRecovery(null), TypeError);
});
