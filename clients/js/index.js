// ioscale-recovery: lets a socket.io-client v4 Socket take part in ioscale's session recovery.
//
// No imports and no Node-only APIs, so the same file works in Node and as a browser ES module,
// whichever socket.io-client build (npm package or the minified dist bundle) made the socket.

/** Event the server emits right after each namespace CONNECT, with the recovery verdict. */
export const RECOVERY_EVENT = "ioscale:recovery";

const AUTH_KEY = "ioscale_recovery";
const OFFSET_KEY = "ioscale_offset";
// Socket.IO packet type of CONNECT (socket.io-parser PacketType.CONNECT); protocol constant.
const CONNECT = 0;
const WRAPPED = Symbol.for("ioscale-recovery.state");

// The server appends `{ ioscale_offset: "<opaque>" }` as the last argument of recoverable
// events. Anything else (an app object that merely has that key among others, a non-string
// value) is app data and must reach the handlers unchanged, hence the strict shape check.
function offsetOf(arg) {
  if (arg === null || typeof arg !== "object" || Array.isArray(arg)) return undefined;
  const keys = Object.keys(arg);
  if (keys.length !== 1 || keys[0] !== OFFSET_KEY) return undefined;
  const value = arg[OFFSET_KEY];
  return typeof value === "string" ? value : undefined;
}

// A Socket.IO CONNECT payload must be an object; a missing or non-object app auth is replaced
// rather than merged. A copy is made so the app's own auth object is never modified.
function mergeAuth(appAuth, recovery) {
  const isObject = appAuth !== null && typeof appAuth === "object" && !Array.isArray(appAuth);
  return Object.assign({}, isObject ? appAuth : {}, { [AUTH_KEY]: recovery });
}

/**
 * Enables ioscale session recovery on a socket.io-client Socket and returns the same socket.
 * Call it before the socket's first connection: create the socket with `autoConnect: false`,
 * call withRecovery(socket), then socket.connect().
 */
export function withRecovery(socket) {
  if (!socket || typeof socket.emitEvent !== "function" || typeof socket.packet !== "function") {
    throw new TypeError("withRecovery: expected a socket.io-client v4 Socket");
  }
  if (socket[WRAPPED]) return socket; // idempotent: a second wrap would merge twice
  if (socket.connected) {
    // The first CONNECT already went out without the opt-in, so this connection has no session.
    console.warn("ioscale-recovery: withRecovery() called on a connected socket; recovery starts with the next connection");
  }

  const state = { session: null, offset: null, id: null, recovered: false };
  Object.defineProperty(socket, WRAPPED, { value: state });

  // Why `packet` and not `socket.auth` or `_sendConnectPacket`: every CONNECT goes through
  // socket.packet() after socket.io-client has resolved the app's auth (object or callback form),
  // so socket.auth stays exactly what the app set and the app may still reassign it or change it
  // in place between reconnections; `_sendConnectPacket` is renamed in the minified browser bundles,
  // `packet` is not. The state is read here, at send time, so each reconnection carries the latest
  // session and offset.
  const originalPacket = socket.packet;
  socket.packet = function packet(pkt) {
    if (pkt && pkt.type === CONNECT) {
      const recovery = { session: state.session, offset: state.offset };
      pkt = Object.assign({}, pkt, { data: mergeAuth(pkt.data, recovery) });
    }
    return originalPacket.call(this, pkt);
  };

  // socket.io-client v4 routes every received event through emitEvent(args), both live and when
  // draining the buffer of events received before CONNECT, and emitEvent feeds the onAny
  // listeners and then the on() handlers; so stripping here hides the marker from both.
  const originalEmitEvent = socket.emitEvent;
  socket.emitEvent = function emitEvent(args) {
    if (args.length >= 2) {
      const offset = offsetOf(args[args.length - 1]);
      if (offset !== undefined) {
        // Buffered args are frozen by socket.io-client, so copy instead of popping.
        args = args.slice(0, -1);
        // Recorded before dispatch: the event is delivered once handlers run, and a handler
        // that reconnects synchronously must already send this offset.
        state.offset = offset;
      }
    }
    if (args[0] === RECOVERY_EVENT) noteRecovery(state, args[1]);
    // Always forwarded: the app may listen to ioscale:recovery too.
    return originalEmitEvent.call(this, args);
  };

  // socket.io-client assigns `recovered` on every CONNECT (false unless its own, non-ioscale,
  // recovery matched); keeping that write and coercing it to a boolean makes `recovered` false
  // from CONNECT until this connection's ioscale:recovery verdict arrives.
  Object.defineProperty(socket, "recovered", {
    configurable: true,
    enumerable: true,
    get: () => state.recovered,
    set: (value) => {
      state.recovered = Boolean(value);
    },
  });

  // A fresh frozen snapshot per read: the app can inspect or persist it but not corrupt the state.
  Object.defineProperty(socket, "ioscale", {
    configurable: true,
    enumerable: true,
    get: () => Object.freeze({ session: state.session, offset: state.offset, id: state.id }),
  });

  return socket;
}

function noteRecovery(state, info) {
  if (info === null || typeof info !== "object") return; // not the documented shape: ignore
  if (typeof info.session === "string") state.session = info.session;
  if (typeof info.id === "string") state.id = info.id;
  state.recovered = info.recovered === true;
  // A non-recovered session is a fresh one: an offset from the old session means nothing in it.
  if (!state.recovered) state.offset = null;
}
