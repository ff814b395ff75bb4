//! Long-lived socket.io-client driver for the ioscale cluster tests.
//
// The Rust harness (tests/src/agent.rs) spawns this once per test and talks to
// it in JSON lines: one request per stdin line `{"id", "cmd", ...}`, one reply
// per stdout line `{"id", "ok": true, "result"}` or `{"id", "ok": false,
// "error"}`. Replies may come out of order (a `wait_count` can be pending while
// other commands complete), hence the ids. Nothing else is written to stdout;
// diagnostics go to stderr, which the harness saves next to the node logs.
//
// Binary values cross the JSON boundary as `{"$binary": "<base64>"}` in both
// directions, converted recursively, so a test can send and assert on binary
// attachments.
//
// Every client is identified by a name chosen by the test. The agent records
// every event each client receives (name + args, arrival order) and every
// disconnect reason, so a test can assert both presence and absence.

import { io } from "socket.io-client";
import { createInterface } from "node:readline";

/** name -> client record */
const clients = new Map();

function log(...args) {
  process.stderr.write(`[agent ${new Date().toISOString()}] ${args.map(String).join(" ")}\n`);
}

// --- binary <-> JSON ---------------------------------------------------------

function isBinary(v) {
  return Buffer.isBuffer(v) || v instanceof ArrayBuffer || ArrayBuffer.isView(v);
}

function toJson(v) {
  if (isBinary(v)) {
    let buf;
    if (Buffer.isBuffer(v)) buf = v;
    else if (v instanceof ArrayBuffer) buf = Buffer.from(v);
    else buf = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    return { $binary: buf.toString("base64") };
  }
  if (Array.isArray(v)) return v.map(toJson);
  if (v !== null && typeof v === "object") {
    const out = {};
    for (const [k, val] of Object.entries(v)) out[k] = toJson(val);
    return out;
  }
  // undefined has no JSON form; null keeps the array positions intact.
  if (v === undefined) return null;
  return v;
}

function fromJson(v) {
  if (Array.isArray(v)) return v.map(fromJson);
  if (v !== null && typeof v === "object") {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "$binary" && typeof v.$binary === "string") {
      return Buffer.from(v.$binary, "base64");
    }
    const out = {};
    for (const [k, val] of Object.entries(v)) out[k] = fromJson(val);
    return out;
  }
  return v;
}

// --- waiting -----------------------------------------------------------------

/** Resolves when `pred()` is true, re-checked on every client state change. */
function waitFor(client, pred, timeoutMs, describe) {
  return new Promise((resolve, reject) => {
    if (pred()) return resolve();
    const check = () => {
      if (pred()) {
        clearTimeout(timer);
        client.waiters.delete(check);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      client.waiters.delete(check);
      reject(new Error(`timeout after ${timeoutMs} ms waiting for ${describe()}`));
    }, timeoutMs);
    client.waiters.add(check);
  });
}

function notify(client) {
  for (const w of [...client.waiters]) w();
}

function getClient(name) {
  const c = clients.get(name);
  if (!c) throw new Error(`unknown client ${JSON.stringify(name)}`);
  return c;
}

// --- commands ----------------------------------------------------------------

const commands = {
  /** Liveness check for the harness self-test. */
  async ping() {
    return "pong";
  },

  /**
   * Opens a new socket (own Manager, so clients never share a connection) and
   * resolves with its id once connected. With `reconnection: false` (the
   * default) a connect_error fails the command at once.
   */
  async connect({ client, url, namespace = "/", transports = ["websocket"], auth, reconnection = false, timeout_ms = 10000, share_with, whoami = true }) {
    if (clients.has(client)) throw new Error(`client ${client} already exists`);
    // `share_with`: open `namespace` on that client's Manager, multiplexed on its one
    // Engine.IO connection (what io.connect('…/chat') and io.connect('…/news') do in a browser).
    const socket = share_with
      ? getClient(share_with).socket.io.socket(namespace, { auth: auth ?? undefined })
      : io(url.replace(/\/$/, "") + namespace, {
      transports,
      // Upgrading polling -> websocket only makes sense when both are allowed.
      upgrade: transports.length > 1,
      auth: auth ?? undefined,
      reconnection,
      reconnectionDelay: 100,
      reconnectionDelayMax: 1000,
      forceNew: true,
      timeout: timeout_ms,
      // Keep cookies like a browser does (engine.io-client's cookie jar, one per connection):
      // load balancers pin a long-polling session to its node with a cookie (deploy/lb).
      withCredentials: true,
    });
    const rec = {
      socket,
      events: [],
      disconnects: [],
      connects: 0,
      reconnects: 0,
      connectErrors: [],
      ackReplies: new Map(),
      waiters: new Set(),
    };
    clients.set(client, rec);

    socket.onAny((event, ...args) => {
      // The server asked for an ack when the last argument is a callback.
      let ack = null;
      if (args.length > 0 && typeof args[args.length - 1] === "function") ack = args.pop();
      rec.events.push({ event, args: toJson(args), ack: ack !== null });
      if (ack) {
        const reply = rec.ackReplies.get(event) ?? { mode: "none" };
        if (reply.mode === "echo") ack(args[0]);
        else if (reply.mode === "value") ack(fromJson(reply.value));
        // "none": never answer, to exercise the server's ack timeout.
      }
      notify(rec);
    });
    socket.on("connect", () => {
      rec.connects += 1;
      notify(rec);
    });
    socket.on("disconnect", (reason) => {
      rec.disconnects.push(reason);
      log(`client ${client} disconnected: ${reason}`);
      notify(rec);
    });
    socket.on("connect_error", (err) => {
      rec.connectErrors.push(String(err && err.message ? err.message : err));
      log(`client ${client} connect_error: ${err && err.message}`);
      notify(rec);
    });
    socket.io.on("reconnect", () => {
      rec.reconnects += 1;
      notify(rec);
    });

    try {
      await waitFor(
        rec,
        () => socket.connected || (!reconnection && rec.connectErrors.length > 0),
        timeout_ms,
        () => `client ${client} to connect to ${url}${namespace}`,
      );
    } catch (e) {
      socket.close();
      clients.delete(client);
      throw e;
    }
    if (!socket.connected) {
      const err = rec.connectErrors[rec.connectErrors.length - 1];
      socket.close();
      clients.delete(client);
      throw new Error(`connect_error: ${err}`);
    }
    // The id other clients and the server API know this socket by: `ioscale-node` answers
    // `whoami` with its public id (socket.id is the session id, a key to the session).
    let id = socket.id;
    if (whoami) {
      const answer = await socket.timeout(timeout_ms).emitWithAck("whoami");
      if (!answer || answer.ok !== true || typeof answer.id !== "string") {
        throw new Error(`client ${client}: whoami answered ${JSON.stringify(answer)}`);
      }
      id = answer.id;
    }
    return { id, sid: socket.id, transport: socket.io.engine.transport.name };
  },

  /** Emits an event; with `ack_timeout_ms`, resolves with the ack arguments. */
  async emit({ client, event, args = [], ack_timeout_ms }) {
    const { socket } = getClient(client);
    const payload = fromJson(args);
    if (ack_timeout_ms === undefined || ack_timeout_ms === null) {
      socket.emit(event, ...payload);
      return null;
    }
    return await new Promise((resolve, reject) => {
      socket.timeout(ack_timeout_ms).emit(event, ...payload, (err, ...response) => {
        if (err) reject(new Error(`ack timeout after ${ack_timeout_ms} ms for ${event}`));
        else resolve(toJson(response));
      });
    });
  },

  /** How this client answers server emits of `event` that carry an ack. */
  async set_ack_reply({ client, event, mode, value }) {
    if (!["echo", "value", "none"].includes(mode)) throw new Error(`bad ack mode ${mode}`);
    getClient(client).ackReplies.set(event, { mode, value });
    return null;
  },

  /** All payloads (arrays of args) received for `event`, or every event when omitted. */
  async events({ client, event }) {
    const rec = getClient(client);
    if (event === undefined || event === null) return rec.events;
    return rec.events.filter((e) => e.event === event).map((e) => e.args);
  },

  /** Waits until `event` was received at least `n` times; returns the payloads. */
  async wait_count({ client, event, n, timeout_ms = 5000 }) {
    const rec = getClient(client);
    const count = () => rec.events.filter((e) => e.event === event).length;
    await waitFor(rec, () => count() >= n, timeout_ms, () => `client ${client}: ${n} x ${event} (got ${count()})`);
    return rec.events.filter((e) => e.event === event).map((e) => e.args);
  },

  /** Waits until the client has seen at least `n` disconnects; returns the reasons. */
  async wait_disconnect({ client, n = 1, timeout_ms = 5000 }) {
    const rec = getClient(client);
    await waitFor(rec, () => rec.disconnects.length >= n, timeout_ms, () => `client ${client}: ${n} disconnect(s) (got ${rec.disconnects.length})`);
    return rec.disconnects;
  },

  /** Waits until the client is connected after at least `connects` successful connects. */
  async wait_connected({ client, connects = 1, timeout_ms = 5000 }) {
    const rec = getClient(client);
    await waitFor(
      rec,
      () => rec.socket.connected && rec.connects >= connects,
      timeout_ms,
      () => `client ${client}: connected with ${connects} connect(s) (got ${rec.connects}, connected=${rec.socket.connected})`,
    );
    return rec.socket.id;
  },

  async disconnect({ client }) {
    const rec = getClient(client);
    rec.socket.disconnect();
    return null;
  },

  async state({ client }) {
    const rec = getClient(client);
    const s = rec.socket;
    return {
      connected: s.connected,
      id: s.id ?? null,
      transport: s.io.engine && s.io.engine.transport ? s.io.engine.transport.name : null,
      last_disconnect_reason: rec.disconnects.length ? rec.disconnects[rec.disconnects.length - 1] : null,
      disconnect_reasons: rec.disconnects,
      connects: rec.connects,
      reconnects: rec.reconnects,
      connect_errors: rec.connectErrors,
      recovered: s.recovered ?? false,
      // The Engine.IO session: equal for sockets multiplexed on one connection.
      engine_id: s.io.engine && s.io.engine.id ? s.io.engine.id : null,
    };
  },
};

// --- bulk commands (burst and latency tests, tests/src/extra.rs) -------------
//
// Thousands of emits driven one JSON line at a time would measure this
// protocol, not the cluster: these loops run inside the agent and answer with a
// summary.

const sleepMs = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `client` emits `event` {room, data: {seq: i}} for i in 0..count, each with an
 * ack, keeping at most `window` unacked (`window` >= `count`: all at once).
 * Resolves when every ack came back. An ack `{ok: false, error: "<text>"}` is a
 * refusal (counted apart, its seq listed); anything else but `{ok: true}`, or
 * no ack in time, is an error. `pad_bytes` adds a string of that many
 * characters to each message's data, to make the messages bigger.
 */
commands.publish_window = async ({ client, event = "publish", room, count, window = 500, ack_timeout_ms = 30000, pad_bytes = 0 }) => {
  const { socket } = getClient(client);
  const pad = pad_bytes > 0 ? "x".repeat(pad_bytes) : null;
  const started = Date.now();
  let next = 0;
  let inFlight = 0;
  let acked = 0;
  let errorCount = 0;
  const errors = [];
  const refusedSeqs = [];
  const refusalErrors = [];
  const fail = (msg) => {
    errorCount += 1;
    if (errors.length < 10) errors.push(msg);
  };
  await new Promise((resolve) => {
    if (count === 0) return resolve();
    const pump = () => {
      while (inFlight < window && next < count) {
        const seq = next++;
        inFlight += 1;
        const data = pad === null ? { seq } : { seq, pad };
        socket.timeout(ack_timeout_ms).emit(event, { room, data }, (err, res) => {
          inFlight -= 1;
          if (err) fail(`seq ${seq}: no ack within ${ack_timeout_ms} ms`);
          else if (res && res.ok === true) acked += 1;
          else if (res && res.ok === false && typeof res.error === "string" && res.error.length > 0) {
            refusedSeqs.push(seq);
            if (refusalErrors.length < 3) refusalErrors.push(res.error);
          } else fail(`seq ${seq}: ack ${JSON.stringify(res)}`);
          if (next >= count && inFlight === 0) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  refusedSeqs.sort((a, b) => a - b);
  return {
    sent: next,
    acked,
    refused: refusedSeqs.length,
    refused_seqs: refusedSeqs,
    refusal_errors: refusalErrors,
    error_count: errorCount,
    errors,
    started_ms: started,
    finished_ms: Date.now(),
  };
};

/**
 * Waits (at most `timeout_ms`) until `client` has `n` x `event` (less the
 * `skip` ones), then `settle_ms` more, and checks that args[0].data[field] is
 * exactly 0..n-1 without the seqs in `skip` (refused publishes), in order.
 * Polls instead of using waiters: a waiter re-filters every event on each
 * arrival, which is quadratic at 20,000 events.
 */
commands.seq_check = async ({ client, event = "msg", n, field = "seq", skip = [], timeout_ms = 60000, settle_ms = 500 }) => {
  const rec = getClient(client);
  const skipped = new Set(skip);
  const expected = [];
  for (let i = 0; i < n; i++) if (!skipped.has(i)) expected.push(i);
  let scanned = 0;
  let count = 0;
  let doneAt = null;
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    for (; scanned < rec.events.length; scanned++) if (rec.events[scanned].event === event) count += 1;
    if (count >= expected.length) {
      doneAt = Date.now();
      break;
    }
    if (Date.now() > deadline) break;
    await sleepMs(20);
  }
  await sleepMs(settle_ms);
  const seqs = rec.events
    .filter((e) => e.event === event)
    .map((e) => (e.args && e.args[0] && e.args[0].data ? e.args[0].data[field] : undefined));
  const seen = new Map();
  let duplicates = 0;
  let invalid = 0;
  let unexpected = 0;
  let firstBad = null;
  seqs.forEach((s, i) => {
    if (!Number.isInteger(s)) invalid += 1;
    else {
      const c = seen.get(s) ?? 0;
      if (c > 0) duplicates += 1;
      seen.set(s, c + 1);
      if (skipped.has(s)) unexpected += 1;
    }
    if (s !== expected[i] && firstBad === null) firstBad = { index: i, got: s ?? null };
  });
  let missingCount = 0;
  const missingFirst = [];
  for (const i of expected) {
    if (!seen.has(i)) {
      missingCount += 1;
      if (missingFirst.length < 20) missingFirst.push(i);
    }
  }
  if (firstBad === null && seqs.length > expected.length) firstBad = { index: expected.length, got: seqs[expected.length] ?? null };
  return {
    count: seqs.length,
    in_order: firstBad === null && seqs.length === expected.length,
    duplicates,
    missing_count: missingCount,
    missing_first: missingFirst,
    invalid,
    unexpected,
    first_out_of_order: firstBad,
    done_ms: doneAt,
  };
};

/**
 * `sender` emits `event` {room, data: {lat_seq: i, sent_ns}} one at a time;
 * each must reach `receiver` as `msg` before the next goes out. Latency is
 * receive time minus the `sent_ns` carried in the payload (same process, same
 * monotonic clock).
 */
commands.latency_run = async ({ sender, receiver, event = "publish", room, count, timeout_ms = 5000 }) => {
  const s = getClient(sender).socket;
  const r = getClient(receiver).socket;
  const lat = [];
  for (let i = 0; i < count; i++) {
    const got = new Promise((resolve, reject) => {
      const handler = (m) => {
        if (m && m.data && m.data.lat_seq === i) {
          const now = process.hrtime.bigint();
          clearTimeout(timer);
          r.off("msg", handler);
          resolve(Number(now - BigInt(m.data.sent_ns)) / 1e6);
        }
      };
      const timer = setTimeout(() => {
        r.off("msg", handler);
        reject(new Error(`latency probe ${i} not received within ${timeout_ms} ms`));
      }, timeout_ms);
      r.on("msg", handler);
    });
    s.emit(event, { room, data: { lat_seq: i, sent_ns: process.hrtime.bigint().toString() } });
    lat.push(await got);
  }
  const sorted = [...lat].sort((a, b) => a - b);
  const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : 0);
  return {
    n: lat.length,
    min_ms: sorted[0] ?? 0,
    p50_ms: pct(50),
    p90_ms: pct(90),
    p99_ms: pct(99),
    max_ms: sorted[sorted.length - 1] ?? 0,
    mean_ms: lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length : 0,
  };
};

// --- browser commands (chat page test, tests/src/browser.rs) -----------------
//
// A headless Chromium driven by playwright-core, for pages the nodes serve. Loaded
// on first use, so agents that never open a page do not pay for it. Each page
// gets its own browser context (like two separate browsers); every call is
// bounded by `timeout_ms`.

let browser = null;
/** name -> { context, page, errors: [] } */
const pages = new Map();

function getPage(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`unknown page ${JSON.stringify(name)}`);
  return p;
}

commands.browser_launch = async ({ executable_path, args = [], timeout_ms = 30000 }) => {
  if (browser) throw new Error("browser already launched");
  const { chromium } = await import("playwright-core");
  // launch() gives the browser a fresh temporary user-data-dir and removes it on close.
  browser = await chromium.launch({ executablePath: executable_path, headless: true, args, timeout: timeout_ms });
  log(`browser ${browser.version()} launched`);
  return { version: browser.version() };
};

commands.page_open = async ({ page, url, timeout_ms = 15000 }) => {
  if (!browser) throw new Error("browser not launched");
  if (pages.has(page)) throw new Error(`page ${page} already exists`);
  const context = await browser.newContext();
  const p = await context.newPage();
  const rec = { context, page: p, errors: [] };
  pages.set(page, rec);
  p.on("console", (m) => {
    log(`page ${page} console.${m.type()}: ${m.text()}`);
    if (m.type() === "error") rec.errors.push(`console: ${m.text()}`);
  });
  p.on("pageerror", (e) => {
    log(`page ${page} error: ${e.message}`);
    rec.errors.push(`pageerror: ${e.message}`);
  });
  const res = await p.goto(url, { waitUntil: "load", timeout: timeout_ms });
  return { status: res ? res.status() : null };
};

/** Goes to `url` in an open page (a hash change stays in the document: its state is kept). */
commands.page_goto = async ({ page, url, timeout_ms = 15000 }) => {
  const res = await getPage(page).page.goto(url, { waitUntil: "load", timeout: timeout_ms });
  return { status: res ? res.status() : null };
};

commands.page_fill = async ({ page, selector, value, timeout_ms = 5000 }) => {
  await getPage(page).page.fill(selector, value, { timeout: timeout_ms });
  return null;
};

commands.page_click = async ({ page, selector, timeout_ms = 5000 }) => {
  await getPage(page).page.click(selector, { timeout: timeout_ms });
  return null;
};

/** Waits until an element matching `selector` has `text` in its text. */
commands.page_wait_text = async ({ page, selector, text, timeout_ms = 5000 }) => {
  await getPage(page).page.waitForFunction(
    ([sel, t]) => [...document.querySelectorAll(sel)].some((e) => (e.textContent || "").includes(t)),
    [selector, text],
    { timeout: timeout_ms, polling: 50 },
  );
  return null;
};

/** The text of every element matching `selector`, in document order. */
commands.page_texts = async ({ page, selector, timeout_ms = 5000 }) => {
  const p = getPage(page).page;
  return await Promise.race([
    p.$$eval(selector, (els) => els.map((e) => e.textContent || "")),
    sleepMs(timeout_ms).then(() => {
      throw new Error(`page_texts ${selector}: no answer within ${timeout_ms} ms`);
    }),
  ]);
};

/** The current value of the form field `selector`. */
commands.page_value = async ({ page, selector, timeout_ms = 5000 }) => {
  return await getPage(page).page.inputValue(selector, { timeout: timeout_ms });
};

commands.page_screenshot = async ({ page, path, timeout_ms = 10000 }) => {
  await getPage(page).page.screenshot({ path, fullPage: true, timeout: timeout_ms });
  return null;
};

/** Console errors and uncaught exceptions of the page so far. */
commands.page_errors = async ({ page }) => getPage(page).errors;

commands.browser_close = async ({ timeout_ms = 10000 }) => {
  if (!browser) return null;
  const b = browser;
  browser = null;
  pages.clear();
  await Promise.race([b.close(), sleepMs(timeout_ms)]);
  return null;
};

// --- CRUD dialect commands (tests/tests/dialect_*.rs) -------------------------
//
// The seeds' client code runs here, on a client's socket: Backbone.sync on the real
// `backbone` package (backbone-client.mjs) and sails.io.js 0.9's virtual requests
// (sails09-client.mjs). Loaded on first use, so the other commands never depend on them.

/** Rejects after `ms` unless `promise` settles first. */
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Runs one Backbone operation through the seed's Backbone.sync on `client`'s socket:
 * `fetch` (a collection), `fetch_one` (model `model_id`), `create` (a new model of
 * `attributes`), `save` (model `model_id` with `attributes`), `destroy` (model `model_id`).
 * Resolves with the reply event and its data, plus what Backbone made of it (`models` or
 * `attributes`, and `id`). The parameter is `model_id` because `id` is the request id.
 */
commands.backbone = async ({ client, action, url, ctx, model_id: id, attributes = {}, timeout_ms = 5000 }) => {
  const { socket } = getClient(client);
  const { backboneClasses } = await import("./backbone-client.mjs");
  const { Model, Collection } = backboneClasses(socket, url, ctx);
  const what = `backbone ${action} ${url}${id !== undefined && id !== null ? "/" + id : ""}`;
  switch (action) {
    case "fetch": {
      const col = new Collection();
      const answer = await within(col.fetch(), timeout_ms, what);
      return { ...toJson(answer), models: col.toJSON() };
    }
    case "fetch_one": {
      const m = new Model({ id });
      const answer = await within(m.fetch(), timeout_ms, what);
      return { ...toJson(answer), attributes: m.toJSON(), id: m.id ?? null };
    }
    case "create": {
      const m = new Model(fromJson(attributes));
      const sent = m.save();
      if (!sent) throw new Error(`${what}: Backbone refused to save`);
      const answer = await within(sent, timeout_ms, what);
      return { ...toJson(answer), attributes: m.toJSON(), id: m.id ?? null };
    }
    case "save": {
      const m = new Model({ ...fromJson(attributes), id });
      const sent = m.save();
      if (!sent) throw new Error(`${what}: Backbone refused to save`);
      const answer = await within(sent, timeout_ms, what);
      return { ...toJson(answer), attributes: m.toJSON(), id: m.id ?? null };
    }
    case "destroy": {
      const m = new Model({ id });
      const sent = m.destroy();
      if (!sent) throw new Error(`${what}: Backbone did not send the delete`);
      const answer = await within(sent, timeout_ms, what);
      return toJson(answer);
    }
    default:
      throw new Error(`unknown backbone action ${action}`);
  }
};

/**
 * One sails.io.js 0.9 virtual request from `client`: `method` (get, post, put, delete) of
 * `url` with `data`. Resolves with the parsed body, the raw first ack argument and the other
 * ack arguments (`rest[0]` is the status code).
 */
commands.sails09 = async ({ client, method = "get", url, data, timeout_ms = 5000 }) => {
  const { socket } = getClient(client);
  const sails = await import("./sails09-client.mjs");
  const r = await within(sails.request(socket, url, fromJson(data ?? {}), null, method), timeout_ms, `sails ${method} ${url}`);
  return toJson(r);
};

// --- main loop ---------------------------------------------------------------

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    log(`unparseable command: ${line}`);
    return;
  }
  const { id, cmd, ...params } = req;
  const handler = commands[cmd];
  if (!handler) {
    reply({ id, ok: false, error: `unknown command ${cmd}` });
    return;
  }
  // Commands run concurrently: a pending wait must not block later commands.
  Promise.resolve()
    .then(() => handler(params))
    .then(
      (result) => reply({ id, ok: true, result: result ?? null }),
      (err) => reply({ id, ok: false, error: String(err && err.message ? err.message : err) }),
    );
});
// The harness closing stdin (or dying) ends the agent and all its sockets.
rl.on("close", () => {
  for (const { socket } of clients.values()) socket.close();
  process.exit(0);
});
log(`agent started, pid ${process.pid}`);
