// Type declarations for ioscale-recovery (index.js): ioscale session recovery for socket.io-client v4.
import type { Socket } from "socket.io-client";

/** The event the server emits right after each namespace CONNECT: "ioscale:recovery". */
export declare const RECOVERY_EVENT: "ioscale:recovery";

/** Why a session was not recovered; "new" on a first connection. */
export type IoscaleRecoveryReason =
  | "new"
  | "unknown"
  | "expired"
  | "identity"
  | "history"
  | "unavailable";

/** The single argument of the `ioscale:recovery` event. */
export interface IoscaleRecoveryInfo {
  /** True when the previous session was resumed and missed broadcasts are replayed. */
  recovered: boolean;
  /** Session token to present on the next connection; replaces the previous one. */
  session: string;
  /** The socket's public id. */
  id: string;
  /** Why the session was not recovered; null when it was. */
  reason: IoscaleRecoveryReason | null;
  /** How many missed events the server replays after this event. */
  missed: number;
}

/** Snapshot of what the helper will present on the next connection. */
export interface IoscaleRecoveryState {
  /** Session token from the last `ioscale:recovery`; null before the first one. */
  readonly session: string | null;
  /** Offset of the last recoverable event received in that session; null when none. */
  readonly offset: string | null;
  /** Public socket id from the last `ioscale:recovery`; null before the first one. */
  readonly id: string | null;
}

/** What withRecovery adds to a Socket. */
export interface IoscaleRecoverySocket {
  /** Verdict of the last `ioscale:recovery`; false from each CONNECT until that event arrives. */
  recovered: boolean;
  /** A fresh frozen snapshot on every read. */
  readonly ioscale: IoscaleRecoveryState;
}

/**
 * Enables ioscale session recovery on `socket` and returns it. Call before the first connection:
 * create the socket with `autoConnect: false`, call withRecovery, then `socket.connect()`.
 */
export declare function withRecovery<S extends Socket<any, any>>(socket: S): S & IoscaleRecoverySocket;
