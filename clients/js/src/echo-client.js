// Echo's client library: one WebSocket per client (docs/PROTOCOL.md) with reconnection, token
// refresh on the live socket, rooms that resume with `since_seq`, an outbox that stores every
// send exactly once, AI replies as async iterators, presence, typing and job events, typed
// errors, and helpers for the REST routes (docs/API.md).
//
// Plain JavaScript with JSDoc types, checked by `tsc` (clients/js/tsconfig.json), with no
// dependencies: browsers import this very file (echo-server serves it as /app/echo-client.js,
// see src/routes/app.rs), Node >= 20 imports it from the npm package.

// ---------------------------------------------------------------------------------------------
// Shapes of the protocol and the REST API (docs/PROTOCOL.md, docs/API.md#shapes)

/**
 * A stored message (`MessageResponse`).
 * @typedef {object} Message
 * @property {string} id
 * @property {string} chat_id
 * @property {string} content
 * @property {boolean} is_from_ai
 * @property {'user'|'assistant'|'system'} role
 * @property {string|null} user_id
 * @property {number} seq
 * @property {string} created_at
 */

/**
 * A chat (`ChatResponse`).
 * @typedef {object} Chat
 * @property {string} id
 * @property {string} title
 * @property {string} created_at
 * @property {string} updated_at
 */

/**
 * A chat with its latest messages (`ChatDetailResponse`).
 * @typedef {Chat & {messages: Message[]}} ChatDetail
 */

/**
 * A user (`UserResponse`).
 * @typedef {object} User
 * @property {string} id
 * @property {string|null} [email]
 * @property {string|null} [username]
 * @property {string|null} [full_name]
 */

/**
 * A video job (`VideoJobWithDetailsResponse`; `job` events carry it without `video` and
 * `video_metadata`).
 * @typedef {object} Job
 * @property {number} id
 * @property {number} video_id
 * @property {'PENDING'|'PROCESSING'|'COMPLETED'|'FAILED'|'CANCELLED'} status
 * @property {number} progress
 * @property {string|null} stage
 * @property {Record<string, {status: string, progress?: number, started_at?: string, finished_at?: string, error?: string}>|null} processing_stages
 * @property {string|null} error_message
 * @property {string} created_at
 * @property {string} updated_at
 * @property {Record<string, any>|null} [video]
 * @property {Record<string, any>|null} [video_metadata]
 */

/**
 * The first frame of every session.
 * @typedef {object} Welcome
 * @property {'welcome'} type
 * @property {string} session_id
 * @property {string} user_id
 * @property {string} node_id
 * @property {number} protocol
 * @property {number} heartbeat_ms
 * @property {{max_frame_bytes: number, rate_per_sec: number, rate_burst: number, outbound_queue_bytes: number, recovery_limit: number}} limits
 */

/**
 * Any frame the server sends. Fields by `type` are listed in docs/PROTOCOL.md#server-frames.
 * @typedef {{type: string, id?: string, [field: string]: any}} ServerFrame
 */

/**
 * Any frame a client sends (docs/PROTOCOL.md#client-frames).
 * @typedef {{type: string, id?: string, [field: string]: any}} ClientFrame
 */

/**
 * A send waiting in the outbox until its message is stored and seen.
 * @typedef {object} OutboxEntry
 * @property {string} client_msg_id The idempotency key sent with every attempt.
 * @property {string} chat_id
 * @property {string} content
 * @property {number} created_at Milliseconds since the epoch.
 * @property {string} [message_id] Set once a server acknowledged it.
 * @property {number} [seq] Set once a server acknowledged it.
 */

/**
 * Where the outbox lives between runs: `memoryStorage()` (the default) or
 * `localStorageOutbox(key)` in browsers, or anything with these two methods.
 * @typedef {object} OutboxStorage
 * @property {() => OutboxEntry[]} load
 * @property {(entries: OutboxEntry[]) => void} save
 */

/**
 * The part of a WebSocket this library uses: the browser's, Node 22's global one, or the `ws`
 * package's.
 * @typedef {object} WebSocketLike
 * @property {number} readyState
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {(type: string, listener: (event: any) => void) => void} addEventListener
 */

/** @typedef {new (url: string, protocols?: string | string[]) => WebSocketLike} WebSocketConstructor */

/**
 * @typedef {object} ConnectOptions
 * @property {string | string[]} url The server's base URL (`https://echo.example.com`), or its
 *   WebSocket URL (`wss://echo.example.com/ws`); several for failover: each (re)connection
 *   tries the next one after a failure.
 * @property {() => (string | null | undefined | Promise<string | null | undefined>)} getToken
 *   Returns a valid access token (JWT). Called before every connection and, before the current
 *   token expires, to refresh the live session (`refresh_token`). Returning the same token or
 *   nothing means "no newer token yet".
 * @property {WebSocketConstructor} [WebSocket] Defaults to `globalThis.WebSocket` (browsers,
 *   Node >= 22). On Node 20 pass the `ws` package's `WebSocket`, or run Node with
 *   `--experimental-websocket`.
 * @property {typeof fetch} [fetch] For the REST helpers; defaults to `globalThis.fetch`.
 * @property {OutboxStorage} [outbox] Where unsent messages are kept; `memoryStorage()` by default.
 * @property {number} [baseDelayMs] First reconnect delay (1000); it doubles per attempt.
 * @property {number} [maxDelayMs] Longest reconnect delay (15000).
 * @property {number} [requestTimeoutMs] How long a request waits for its reply (10000).
 * @property {number} [refreshMarginMs] Refresh this long before the token's `exp` (60000; at
 *   most a quarter of the token's remaining life).
 * @property {number} [messageCacheSize] Recent messages kept per room to settle sends (500).
 */

/**
 * @typedef {'connecting'|'online'|'reconnecting'|'offline'|'expired'|'stopped'} ConnectionState
 */

/**
 * @typedef {object} StateEvent
 * @property {ConnectionState} state
 * @property {number} attempt Failed attempts since the last session.
 * @property {number} [retryInMs] While `reconnecting`: the wait before the next attempt.
 * @property {number} [retryAt] While `reconnecting`: when it happens (epoch ms).
 * @property {string} [reason] Why the last connection ended, for people.
 * @property {EchoError} [error] The typed error of that ending, when there is one.
 */

/**
 * @typedef {object} SubscribedEvent
 * @property {number} lastSeq The `seq` the room is up to date with.
 * @property {boolean} recovered `false` when the server could not replay everything after
 *   `sinceSeq`: the messages in `missed` must be read over REST (`room.fetchMissed()`).
 * @property {{afterSeq: number, throughSeq: number} | null} missed The gap not replayed.
 * @property {number | null} sinceSeq What the subscription asked to resume after.
 * @property {string[]} online Users with a session in the room.
 * @property {boolean} resumed Whether this was a re-subscription after a reconnect.
 */

/**
 * @typedef {object} ClientEvents
 * @property {StateEvent} state
 * @property {{welcome: Welcome, reconnect: boolean}} open
 * @property {{code: number, reason: string, welcomed: boolean, error: EchoError}} close
 * @property {ServerFrame} frame
 * @property {Job} job
 * @property {{chat_id: string, user_id: string}} member_added
 * @property {{chat_id: string, user_id: string}} member_removed
 * @property {Chat} chat_updated
 * @property {{chat_id: string}} chat_deleted
 * @property {{token: string}} token_refreshed
 * @property {{entries: OutboxEntry[]}} outbox
 * @property {{entry: OutboxEntry, message: Message}} sent
 * @property {{entry: OutboxEntry, error: EchoError}} send_failed
 * @property {EchoError} error
 */

/**
 * @typedef {object} RoomEvents
 * @property {SubscribedEvent} subscribed
 * @property {Message} message
 * @property {{user_id: string, state: 'join'|'leave'}} presence
 * @property {{user_id: string}} typing
 * @property {Reply} generation
 * @property {Chat} chat_updated
 * @property {{}} chat_deleted
 * @property {{user_id: string}} member_added
 * @property {{user_id: string}} member_removed
 * @property {{removed: boolean}} unsubscribed
 * @property {EchoError} error
 */

/**
 * @typedef {object} ReplyResult
 * @property {Message | null} message The stored reply (null only if it could not be found).
 * @property {string | null} finishReason `stop`, `length`, `cancelled`, or null when the reply
 *   ended while this client was disconnected.
 * @property {{prompt_tokens: number, completion_tokens: number, total_tokens: number} | null} usage
 */

// ---------------------------------------------------------------------------------------------
// Errors

/** Every error this library throws or reports. */
export class EchoError extends Error {
  /**
   * @param {string} message
   * @param {{cause?: unknown}} [options]
   */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request failed: an `error` frame (`code` from docs/PROTOCOL.md#error-codes), or locally. */
export class RequestError extends EchoError {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    /** The protocol's error code (`not_found`, …) or `disconnected` / `timeout`. */
    this.code = code;
  }

  /** Whether repeating the request later may succeed. */
  get retryable() {
    return false;
  }
}

/** `bad_request`: a malformed frame or invalid field; the message names it. */
export class BadRequestError extends RequestError {}
/** `unauthorized`: `refresh_token` with an invalid token or one for another user. */
export class UnauthorizedError extends RequestError {}
/** `forbidden` (REST only in protocol version 1). */
export class ForbiddenError extends RequestError {}
/** `not_found`: a chat the caller is not a member of, or a reply not in flight. */
export class NotFoundError extends RequestError {}
/** `conflict` (REST only in protocol version 1). */
export class ConflictError extends RequestError {}
/** `too_large` (REST only in protocol version 1). */
export class TooLargeError extends RequestError {}
/** `rate_limited`: frames too fast, or too many AI replies in flight. */
export class RateLimitedError extends RequestError {
  get retryable() { return true; }
}
/** `unavailable`: the database cannot serve now. */
export class UnavailableError extends RequestError {
  get retryable() { return true; }
}
/** `internal`: an unexpected failure on the server. */
export class InternalError extends RequestError {
  get retryable() { return true; }
}
/** The connection was not open, or dropped before the reply arrived. */
export class DisconnectedError extends RequestError {
  /** @param {string} [message] */
  constructor(message = 'not connected') { super('disconnected', message); }
  get retryable() { return true; }
}
/** No reply within `requestTimeoutMs`. */
export class TimeoutError extends RequestError {
  /** @param {string} [message] */
  constructor(message = 'no reply from the server') { super('timeout', message); }
  get retryable() { return true; }
}

/** The `error` codes of docs/PROTOCOL.md#error-codes and their classes. */
export const ERROR_CLASSES = Object.freeze({
  bad_request: BadRequestError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  conflict: ConflictError,
  too_large: TooLargeError,
  rate_limited: RateLimitedError,
  unavailable: UnavailableError,
  internal: InternalError,
});

/**
 * The typed error of an `error` frame.
 * @param {{code?: unknown, message?: unknown, [field: string]: unknown}} frame
 * @returns {RequestError}
 */
export function errorFromFrame(frame) {
  const code = String(frame.code ?? 'internal');
  const message = String(frame.message ?? code);
  const Class = /** @type {Record<string, typeof RequestError>} */ (ERROR_CLASSES)[code];
  return Class ? new Class(code, message) : new RequestError(code, message);
}

/** The socket closed (docs/PROTOCOL.md#close-codes). */
export class CloseError extends EchoError {
  /**
   * @param {number} code
   * @param {string} reason
   * @param {string} [message]
   */
  constructor(code, reason, message) {
    super(message || reason || `connection closed (${code})`);
    /** The WebSocket close code. */
    this.code = code;
    /** The close frame's reason text. */
    this.reason = reason;
  }
}
/** 1000: the session ended normally (`bye`). */
export class NormalClosureError extends CloseError {}
/** 1000 `heartbeat timeout`: the server heard nothing from this client for too long. */
export class HeartbeatTimeoutError extends CloseError {}
/** 1001: the node is shutting down. */
export class GoingAwayError extends CloseError {}
/** 1002: an RFC 6455 violation. */
export class ProtocolViolationError extends CloseError {}
/** 1006 (and other codes without a close frame): the connection was lost. */
export class ConnectionLostError extends CloseError {}
/** 1007: a text message that was not valid UTF-8. */
export class InvalidUtf8Error extends CloseError {}
/** 1009: a message over `max_frame_bytes`. */
export class MessageTooLargeError extends CloseError {}
/** 4000: this client closed a socket that stopped answering (no welcome, no pong). */
export class StaleConnectionError extends CloseError {}
/** 4001: the token expired without a successful `refresh_token`. */
export class TokenExpiredError extends CloseError {}
/** 4008: this client did not read fast enough. */
export class SlowConsumerError extends CloseError {}
/** 4029: the client kept sending after `rate_limited`. */
export class RateLimitExceededError extends CloseError {}
/** 4030: the user holds too many sockets on that node. */
export class TooManySessionsError extends CloseError {}

/** Close codes, their classes and what they mean for people. */
const CLOSES = /** @type {Record<number, [typeof CloseError, string]>} */ ({
  1000: [NormalClosureError, 'the session ended'],
  1001: [GoingAwayError, 'the server restarted'],
  1002: [ProtocolViolationError, 'a protocol error'],
  1006: [ConnectionLostError, 'the connection was lost'],
  1007: [InvalidUtf8Error, 'a message was not valid UTF-8'],
  1009: [MessageTooLargeError, 'a message was too large'],
  4000: [StaleConnectionError, 'the connection went silent'],
  4001: [TokenExpiredError, 'the token expired'],
  4008: [SlowConsumerError, 'the connection could not keep up'],
  4029: [RateLimitExceededError, 'too many messages were sent'],
  4030: [TooManySessionsError, 'too many sessions are open for this user'],
});

/**
 * The typed error of a close code (and its reason text).
 * @param {number} code
 * @param {string} [reason]
 * @returns {CloseError}
 */
export function closeError(code, reason = '') {
  if (code === 1000 && reason === 'heartbeat timeout') {
    return new HeartbeatTimeoutError(code, reason, 'the server stopped hearing from this client');
  }
  const known = CLOSES[code];
  if (known) return new known[0](code, reason, known[1]);
  return new ConnectionLostError(code, reason, reason || `closed (${code})`);
}

/** An AI reply failed (`generation_failed`); `message` is the partial text stored, if any. */
export class GenerationFailedError extends EchoError {
  /**
   * @param {string} message
   * @param {Message | null} stored
   */
  constructor(message, stored) {
    super(message);
    /** The text stored before the failure, as a message (or null). */
    this.stored = stored;
  }
}

/** An HTTP error of the REST API, with FastAPI's `detail`. */
export class ApiError extends EchoError {
  /**
   * @param {number} status 0 when the server could not be reached.
   * @param {unknown} detail
   */
  constructor(status, detail) {
    super(describeDetail(status, detail));
    this.status = status;
    this.detail = detail;
  }
}

/**
 * @param {number} status
 * @param {unknown} detail
 */
function describeDetail(status, detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => `${(d?.loc || []).slice(1).join('.') || 'body'}: ${d?.msg}`).join('; ');
  }
  if (status === 0) return 'The server cannot be reached.';
  return `Request failed (HTTP ${status}).`;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/**
 * A minimal typed event emitter.
 * @template {object} Events
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(value: any) => void>>} @internal */
    this.listeners = new Map();
  }

  /**
   * Calls `fn` with every `type` event; returns a function that removes it.
   * @template {keyof Events} K
   * @param {K} type
   * @param {(value: Events[K]) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(fn);
    return () => this.off(type, fn);
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {(value: Events[K]) => void} fn
   */
  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {Events[K]} value
   */
  emit(type, value) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try {
        fn(value);
      } catch (e) {
        // A listener's bug must not break the connection; report it where it can be seen.
        setTimeout(() => { throw e; });
      }
    }
  }
}

/** A v4 UUID (`crypto.randomUUID` exists only on secure origins; `getRandomValues` everywhere). */
export function uuid() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Reads a JWT's claims without verifying them (the server does that).
 * @param {string | null | undefined} token
 * @returns {{sub?: string, exp?: number, [claim: string]: any} | null}
 */
export function tokenClaims(token) {
  try {
    if (!token) return null;
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * Milliseconds until a token's `exp` (Infinity without one).
 * @param {string | null | undefined} token
 */
function msUntilExpiry(token) {
  const exp = tokenClaims(token)?.exp;
  return typeof exp === 'number' ? exp * 1000 - Date.now() : Infinity;
}

/**
 * The HTTP base URL and the WebSocket URL of one configured server URL.
 * @param {string} url
 * @returns {{http: string, ws: string}}
 */
export function serverUrls(url) {
  const u = new URL(url);
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  let path = u.pathname.replace(/\/+$/, '');
  if (u.protocol === 'ws:' || u.protocol === 'wss:') path = path.replace(/\/ws$/, '');
  const host = u.host;
  return {
    http: `${secure ? 'https' : 'http'}://${host}${path}`,
    ws: `${secure ? 'wss' : 'ws'}://${host}${path}/ws`,
  };
}

/**
 * An outbox kept in memory: it lasts as long as the object (share it to outlive a client).
 * @returns {OutboxStorage}
 */
export function memoryStorage() {
  /** @type {OutboxEntry[]} */
  let entries = [];
  return {
    load: () => entries.map((e) => ({ ...e })),
    /** @param {OutboxEntry[]} next */
    save: (next) => { entries = next.map((e) => ({ ...e })); },
  };
}

/**
 * An outbox kept in the browser's `localStorage` under `key` (use one key per user), so sends
 * survive a reload; falls back to memory where storage is unavailable.
 * @param {string} key
 * @returns {OutboxStorage}
 */
export function localStorageOutbox(key) {
  const memory = memoryStorage();
  const store = /** @type {Storage | undefined} */ (globalThis.localStorage);
  return {
    load() {
      try {
        const raw = store?.getItem(key);
        const parsed = raw ? JSON.parse(raw) : null;
        return Array.isArray(parsed) ? parsed : memory.load();
      } catch {
        return memory.load();
      }
    },
    save(entries) {
      memory.save(entries);
      try {
        if (entries.length) store?.setItem(key, JSON.stringify(entries));
        else store?.removeItem(key);
      } catch {
        // Storage full or disabled: the outbox then lasts for this page only.
      }
    },
  };
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Close code this client uses when it gives up on a silent socket. */
const CLOSE_STALE = 4000;
/** Longest wait after 4029/4030 (the server asked us to slow down). */
const SLOW_DOWN_MS = 10000;
/** How long an acknowledged send waits for its `message` before reading it over REST. */
const SETTLE_WAIT_MS = 3000;

// ---------------------------------------------------------------------------------------------
// The client

/**
 * Connects to Echo and keeps the connection up until `close()`.
 * @param {ConnectOptions} options
 * @returns {EchoClient}
 */
export function connect(options) {
  return new EchoClient(options).start();
}

/**
 * One realtime connection to Echo (create it with `connect()`; `new EchoClient()` does not
 * connect until `start()`).
 * @extends {Emitter<ClientEvents>}
 */
export class EchoClient extends Emitter {
  /** @param {ConnectOptions} options */
  constructor(options) {
    super();
    const urls = Array.isArray(options.url) ? options.url : [options.url];
    if (!urls.length) throw new TypeError('connect: `url` names no server');
    /** The configured servers (`{http, ws}` each). */
    this.servers = urls.map(serverUrls);
    /** @internal */
    this.options = options;
    this.getToken = options.getToken;
    this.baseDelayMs = options.baseDelayMs ?? 1000;
    this.maxDelayMs = options.maxDelayMs ?? 15000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.refreshMarginMs = options.refreshMarginMs ?? 60000;
    this.messageCacheSize = options.messageCacheSize ?? 500;
    /** @type {ConnectionState} */
    this.state = 'stopped';
    /** Failed attempts since the last session began. */
    this.attempt = 0;
    /** The `welcome` of the current (or last) session. @type {Welcome | null} */
    this.welcome = null;
    /** Why the last connection ended, for people. */
    this.reason = '';
    /** The token of the current session. @type {string | null} */
    this.token = null;
    /** Index in `servers` of the current (or next) server. */
    this.serverIndex = 0;
    /** Rooms by chat id. @type {Map<string, Room>} */
    this.rooms = new Map();
    /** Replies by generation id. @type {Map<string, Reply>} */
    this.replies = new Map();
    /** REST helpers, on the server currently used. */
    this.rest = new EchoRest({
      baseUrl: () => this.servers[this.serverIndex].http,
      getToken: () => this.token || this.getToken(),
      fetch: options.fetch,
    });
    /** @type {WebSocketLike | null} @internal */
    this.ws = null;
    /** @type {Map<string, {resolve: (f: ServerFrame) => void, reject: (e: Error) => void, timer: ReturnType<typeof setTimeout>}>} @internal */
    this.pending = new Map();
    /** @internal */
    this.nextId = 1;
    /** @internal */
    this.connectedOnce = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} @internal */
    this.timer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} @internal */
    this.refreshTimer = undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} @internal */
    this.heartbeat = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} @internal */
    this.welcomeTimer = undefined;
    /** Counts calls of `open()`. @internal */
    this.opening = 0;
    /** When the planned refresh is due (epoch ms). @internal */
    this.refreshDueAt = 0;
    /** @internal */
    this.storage = options.outbox ?? memoryStorage();
    /** @type {Map<string, OutboxEntry>} @internal */
    this.outbox = new Map();
    for (const e of this.storage.load()) {
      if (e && typeof e.client_msg_id === 'string' && typeof e.chat_id === 'string') {
        this.outbox.set(e.client_msg_id, e);
      }
    }
    /** Entries this client settled or dropped, so that saving does not bring them back. @type {Set<string>} @internal */
    this.removed = new Set();
    /** Sends on the wire now, by client_msg_id. @type {Set<string>} @internal */
    this.inflight = new Set();
    /** Promises of `send()` callers, by client_msg_id. @type {Map<string, {resolve: (m: Message) => void, reject: (e: Error) => void}[]>} @internal */
    this.sendWaiters = new Map();
    /** Retries of sends refused for now (`unavailable`, `rate_limited`), by client_msg_id. @internal */
    this.retryTries = new Map();
    /** @internal */
    this.onOnline = () => {
      if (this.state === 'offline' || this.state === 'reconnecting') this.schedule(Math.random() * 300);
    };
  }

  /** Opens the connection (and keeps it open until `close()`); returns the client. */
  start() {
    if (this.state !== 'stopped' && this.state !== 'expired') return this;
    globalThis.addEventListener?.('online', this.onOnline);
    this.attempt = 0;
    this.open();
    return this;
  }

  /** Closes for good: pending requests fail, the outbox is kept (in its storage). */
  close() {
    globalThis.removeEventListener?.('online', this.onOnline);
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.welcomeTimer);
    clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'bye');
    this.failPending(new DisconnectedError('the client was closed'));
    for (const [id, waiters] of this.sendWaiters) {
      for (const w of waiters) w.reject(new DisconnectedError('the client was closed; the send stays in the outbox'));
      this.sendWaiters.delete(id);
    }
    this.setState('stopped');
  }

  /** Skips the wait before the next reconnection attempt. */
  retryNow() {
    if (this.state === 'reconnecting' || this.state === 'offline') {
      clearTimeout(this.timer);
      this.open();
    }
  }

  /**
   * The reconnect delay of an attempt: equal jitter, half the exponential step plus a random
   * share of the other half (steps `baseDelayMs` · 2^(attempt−1), at most `maxDelayMs`).
   * @param {number} [attempt]
   */
  backoff(attempt = this.attempt) {
    const step = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.max(0, attempt - 1));
    return step / 2 + Math.random() * (step / 2);
  }

  /** The server currently used (`{http, ws}`). */
  get server() {
    return this.servers[this.serverIndex];
  }

  /**
   * @param {ConnectionState} state
   * @param {Partial<StateEvent>} [extra]
   * @internal
   */
  setState(state, extra = {}) {
    this.state = state;
    this.emit('state', { state, attempt: this.attempt, ...extra });
  }

  /** @returns {boolean} @internal */
  networkDown() {
    const nav = /** @type {{onLine?: boolean} | undefined} */ (globalThis.navigator);
    return nav?.onLine === false;
  }

  /** @internal */
  async open() {
    clearTimeout(this.timer);
    // Only the latest call goes on (a retry while getToken is pending starts over).
    const opening = ++this.opening;
    if (this.networkDown()) {
      this.setState('offline', { reason: this.reason });
      return;
    }
    this.setState(this.connectedOnce ? 'reconnecting' : 'connecting', { retryInMs: 0, reason: 'connecting' });
    /** @type {string | null | undefined} */
    let token;
    try {
      token = await this.getToken();
    } catch (e) {
      this.emit('error', new EchoError('getToken failed', { cause: e }));
      token = null;
    }
    if (this.state === 'stopped' || opening !== this.opening) return;
    if (!token || msUntilExpiry(token) <= 0) {
      const error = new TokenExpiredError(4001, 'token expired', 'no valid token to connect with');
      this.setState('expired', { reason: 'token expired', error });
      return;
    }
    this.token = token;
    const WS = this.options.WebSocket ?? /** @type {WebSocketConstructor | undefined} */ (/** @type {any} */ (globalThis).WebSocket);
    if (!WS) {
      this.emit('error', new EchoError('No WebSocket implementation: pass `WebSocket` (from the `ws` package on Node 20)'));
      this.setState('stopped');
      return;
    }
    const server = this.server;
    const ws = new WS(`${server.ws}?token=${encodeURIComponent(token)}`, ['echo.v1']);
    this.ws = ws;
    let welcomed = false;
    clearTimeout(this.welcomeTimer);
    this.welcomeTimer = setTimeout(() => {
      if (this.ws === ws && !welcomed) ws.close(CLOSE_STALE, 'no welcome');
    }, this.requestTimeoutMs);
    ws.addEventListener('message', (/** @type {{data: unknown}} */ e) => {
      if (this.ws !== ws) return;
      /** @type {ServerFrame} */
      let frame;
      try {
        frame = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (!frame || typeof frame.type !== 'string') return;
      if (!welcomed) {
        if (frame.type !== 'welcome') return;
        welcomed = true;
        clearTimeout(this.welcomeTimer);
        this.onWelcome(/** @type {Welcome} */ (/** @type {unknown} */ (frame)));
        return;
      }
      this.onFrame(frame);
    });
    // Node's `ws` reports an upgrade refused or a connection refused as an error, then a close.
    ws.addEventListener('error', () => {});
    ws.addEventListener('close', (/** @type {{code: number, reason: string}} */ e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.heartbeat);
      clearTimeout(this.welcomeTimer);
      clearTimeout(this.refreshTimer);
      this.failPending(new DisconnectedError('the connection dropped'));
      const error = closeError(e.code, e.reason || '');
      this.reason = error.message;
      for (const room of this.rooms.values()) room.onDropped();
      this.emit('close', { code: e.code, reason: e.reason || '', welcomed, error });
      if (this.state === 'stopped') return;
      this.attempt += 1;
      // The next attempt goes to the next server of the list: a node that dropped us, or
      // never answered, is the likeliest to fail again.
      if (this.servers.length > 1) this.serverIndex = (this.serverIndex + 1) % this.servers.length;
      let delay = this.backoff();
      if (error instanceof TokenExpiredError) delay = Math.random() * 300; // a new token first
      if (error instanceof RateLimitExceededError || error instanceof TooManySessionsError) {
        delay = Math.max(delay, SLOW_DOWN_MS / 2 + Math.random() * (SLOW_DOWN_MS / 2));
      }
      this.schedule(delay, error.message, error);
    });
  }

  /**
   * @param {number} delayMs
   * @param {string} [reason]
   * @param {EchoError} [error]
   * @internal
   */
  schedule(delayMs, reason = this.reason, error) {
    clearTimeout(this.timer);
    this.reason = reason;
    if (this.state === 'stopped' || this.state === 'expired') return;
    if (this.networkDown()) {
      this.setState('offline', { reason, error });
      return;
    }
    this.setState('reconnecting', { retryInMs: delayMs, retryAt: Date.now() + delayMs, reason, error });
    this.timer = setTimeout(() => this.open(), delayMs);
  }

  /** @param {Welcome} welcome @internal */
  onWelcome(welcome) {
    const reconnect = this.connectedOnce;
    this.connectedOnce = true;
    this.attempt = 0;
    this.reason = '';
    this.welcome = welcome;
    this.setState('online');
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.checkAlive(), welcome.heartbeat_ms || 25000);
    this.scheduleRefresh();
    this.emit('open', { welcome, reconnect });
    for (const room of this.rooms.values()) room.subscribeNow();
  }

  /** An application-level ping: a socket that stopped delivering is closed and reopened. @internal */
  checkAlive() {
    if (this.state !== 'online') return;
    this.request({ type: 'ping' }).catch((e) => {
      if (e instanceof TimeoutError && this.ws) this.ws.close(CLOSE_STALE, 'no pong');
    });
  }

  /** Plans the next `refresh_token`: `refreshMarginMs` before `exp`, at most a quarter early. @internal */
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const left = msUntilExpiry(this.token);
    if (!Number.isFinite(left)) return;
    const margin = Math.min(this.refreshMarginMs, Math.max(0, left) / 4);
    // setTimeout's longest delay is 2^31-1 ms; a far expiry is planned again later.
    this.refreshDueAt = Date.now() + Math.max(0, left - margin);
    const delay = Math.min(Math.max(0, left - margin), 2 ** 31 - 1);
    this.refreshTimer = setTimeout(() => this.refresh(), delay);
  }

  /** Extends the live session with a newer token from `getToken` (`refresh_token`). @internal */
  async refresh() {
    if (this.state !== 'online') return;
    if (Date.now() < this.refreshDueAt - 1000) {
      this.scheduleRefresh(); // a far expiry, past setTimeout's range: not due yet
      return;
    }
    const ws = this.ws;
    /** @type {string | null | undefined} */
    let token = null;
    try {
      token = await this.getToken();
    } catch (e) {
      this.emit('error', new EchoError('getToken failed', { cause: e }));
    }
    if (this.ws !== ws || this.state !== 'online') return;
    const current = msUntilExpiry(this.token);
    if (!token || token === this.token || msUntilExpiry(token) <= current) {
      // No newer token yet: ask again soon, until the server ends the session (4001).
      clearTimeout(this.refreshTimer);
      if (current > 0) this.refreshTimer = setTimeout(() => this.refresh(), Math.min(5000, Math.max(250, current / 4)));
      return;
    }
    try {
      await this.request({ type: 'refresh_token', token });
      if (this.ws !== ws) return;
      this.token = token;
      this.emit('token_refreshed', { token });
      this.scheduleRefresh();
    } catch (e) {
      if (this.ws !== ws) return;
      this.emit('error', /** @type {EchoError} */ (e));
      clearTimeout(this.refreshTimer);
      if (msUntilExpiry(this.token) > 0) this.refreshTimer = setTimeout(() => this.refresh(), 2000);
    }
  }

  /** @param {ServerFrame} frame @internal */
  onFrame(frame) {
    if (frame.id && this.pending.has(frame.id)) {
      const p = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      if (p) {
        clearTimeout(p.timer);
        if (frame.type === 'error') p.reject(errorFromFrame(frame));
        else p.resolve(frame);
      }
      return;
    }
    const chatId = frame.chat_id ?? (frame.type === 'chat_updated' ? frame.chat?.id : undefined);
    const room = chatId ? this.rooms.get(chatId) : undefined;
    switch (frame.type) {
      case 'job':
        this.emit('job', frame.job);
        break;
      case 'member_added':
      case 'member_removed':
        this.emit(frame.type, { chat_id: frame.chat_id, user_id: frame.user_id });
        break;
      case 'chat_updated':
        this.emit('chat_updated', frame.chat);
        break;
      case 'chat_deleted':
        this.emit('chat_deleted', { chat_id: frame.chat_id });
        break;
      default:
    }
    if (room) room.onFrame(frame);
    this.emit('frame', frame);
  }

  /**
   * Sends a request frame and resolves with its reply; rejects with a typed `RequestError`.
   * The frame's `id` is assigned here.
   * @param {ClientFrame} frame
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<ServerFrame>}
   */
  request(frame, { timeoutMs = this.requestTimeoutMs } = {}) {
    return new Promise((resolve, reject) => {
      const ws = this.ws;
      if (!ws || ws.readyState !== 1 || this.state !== 'online') {
        reject(new DisconnectedError());
        return;
      }
      const id = `r${this.nextId++}`;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TimeoutError());
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /**
   * Sends a frame that has no reply (`typing`); dropped while not connected.
   * @param {ClientFrame} frame
   */
  notify(frame) {
    const ws = this.ws;
    if (ws && ws.readyState === 1 && this.state === 'online') ws.send(JSON.stringify(frame));
  }

  /** @param {Error} error @internal */
  failPending(error) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
  }

  // -------------------------------------------------------------------------------------------
  // Rooms, sends, replies, jobs

  /**
   * Joins a chat's room (again after every reconnect, resuming after the last `seq` seen).
   * Returns the same `Room` while it is subscribed.
   * @param {string} chatId
   * @param {{sinceSeq?: number | null}} [options] Resume after this `seq` (replaying what
   *   followed it); without it, the room starts at the chat's current end.
   * @returns {Room}
   */
  subscribe(chatId, { sinceSeq = null } = {}) {
    let room = this.rooms.get(chatId);
    if (room) {
      room.resumeFrom(sinceSeq);
      return room;
    }
    room = new Room(this, chatId, sinceSeq);
    this.rooms.set(chatId, room);
    if (this.state === 'online') room.subscribeNow();
    return room;
  }

  /**
   * Posts a message through the outbox (subscribing to the chat if needed). Resolves once with
   * the stored message, across reconnects; rejects only when the server refuses it for good
   * (or `close()` is called first: the entry then stays in the outbox's storage).
   * @param {string} chatId
   * @param {string} content
   * @param {{clientMsgId?: string}} [options]
   * @returns {Promise<Message>}
   */
  send(chatId, content, { clientMsgId } = {}) {
    const id = clientMsgId ?? uuid();
    const room = this.subscribe(chatId);
    const promise = this.waitForSend(id);
    if (!this.outbox.has(id)) {
      this.outbox.set(id, { client_msg_id: id, chat_id: chatId, content, created_at: Date.now() });
      this.saveOutbox();
    }
    if (room.subscribed) this.transmit(id);
    return promise;
  }

  /**
   * A promise of the stored message of an outbox entry (for entries restored from storage).
   * @param {string} clientMsgId
   * @returns {Promise<Message>}
   */
  waitForSend(clientMsgId) {
    return new Promise((resolve, reject) => {
      const list = this.sendWaiters.get(clientMsgId) || [];
      list.push({ resolve, reject });
      this.sendWaiters.set(clientMsgId, list);
    });
  }

  /**
   * The sends not yet stored and seen, oldest first (optionally of one chat).
   * @param {string} [chatId]
   * @returns {OutboxEntry[]}
   */
  pendingSends(chatId) {
    return [...this.outbox.values()]
      .filter((e) => chatId === undefined || e.chat_id === chatId)
      .sort((a, b) => a.created_at - b.created_at);
  }

  /**
   * Drops a send from the outbox (its promise rejects). A send already on the wire may still
   * be stored.
   * @param {string} clientMsgId
   */
  discardSend(clientMsgId) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry) return;
    this.fail(entry, new EchoError('the send was discarded'));
  }

  /**
   * Writes the outbox to its storage, keeping entries another client sharing the storage (a
   * second tab) added meanwhile.
   * @internal
   */
  saveOutbox() {
    const entries = this.pendingSends();
    const mine = new Set(entries.map((e) => e.client_msg_id));
    const others = this.storage.load().filter((e) => e && !mine.has(e.client_msg_id) && !this.removed.has(e.client_msg_id));
    this.storage.save([...others, ...entries]);
    this.emit('outbox', { entries });
  }

  /**
   * Transmits every outbox entry of a room (after each subscription).
   * @param {Room} room
   * @internal
   */
  flushOutbox(room) {
    for (const entry of this.pendingSends(room.chatId)) this.transmit(entry.client_msg_id);
  }

  /**
   * Sends (or re-sends, under the same `client_msg_id`) one outbox entry.
   * @param {string} clientMsgId
   * @internal
   */
  async transmit(clientMsgId) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry || this.inflight.has(clientMsgId)) return;
    const room = this.rooms.get(entry.chat_id);
    if (!room || !room.subscribed || this.state !== 'online') return;
    this.inflight.add(clientMsgId);
    try {
      const ack = await this.request({
        type: 'send', chat_id: entry.chat_id, content: entry.content, client_msg_id: clientMsgId,
      });
      entry.message_id = ack.message_id;
      entry.seq = ack.seq;
      this.saveOutbox();
      const message = await room.messageOf(ack.message_id, ack.seq);
      this.settle(entry, message);
    } catch (e) {
      const error = /** @type {EchoError} */ (e);
      if (error instanceof RequestError && error.retryable) {
        // Disconnected or timed out: sent again after the next subscription. Refused for now
        // (unavailable, rate limited): again after a growing pause.
        if (!(error instanceof DisconnectedError)) {
          const tries = (this.retryTries.get(clientMsgId) || 0) + 1;
          this.retryTries.set(clientMsgId, tries);
          setTimeout(() => this.transmit(clientMsgId), this.backoff(tries));
        }
      } else {
        this.fail(entry, error);
      }
    } finally {
      this.inflight.delete(clientMsgId);
    }
  }

  /**
   * @param {OutboxEntry} entry
   * @param {Message} message
   * @internal
   */
  settle(entry, message) {
    const waiters = this.takeFromOutbox(entry);
    if (!waiters) return;
    for (const w of waiters) w.resolve(message);
    this.emit('sent', { entry, message });
  }

  /**
   * @param {OutboxEntry} entry
   * @param {EchoError} error
   * @internal
   */
  fail(entry, error) {
    const waiters = this.takeFromOutbox(entry);
    if (!waiters) return;
    for (const w of waiters) w.reject(error);
    this.emit('send_failed', { entry, error });
  }

  /**
   * Removes an entry from the outbox for good (stored or refused) and hands back the send()
   * promises waiting on it; null when it was no longer there (already settled).
   * @param {OutboxEntry} entry
   * @returns {{resolve: (m: Message) => void, reject: (e: Error) => void}[] | null}
   * @internal
   */
  takeFromOutbox(entry) {
    if (!this.outbox.delete(entry.client_msg_id)) return null;
    this.removed.add(entry.client_msg_id);
    this.retryTries.delete(entry.client_msg_id);
    this.saveOutbox();
    const waiters = this.sendWaiters.get(entry.client_msg_id) || [];
    this.sendWaiters.delete(entry.client_msg_id);
    return waiters;
  }

  /**
   * The reply of a generation id (created on first sight).
   * @param {string} generationId
   * @param {string} chatId
   * @returns {Reply}
   * @internal
   */
  reply(generationId, chatId) {
    let reply = this.replies.get(generationId);
    if (!reply) {
      reply = new Reply(this, generationId, chatId);
      this.replies.set(generationId, reply);
    }
    return reply;
  }

  /**
   * Stops an AI reply, wherever it runs (`cancel`).
   * @param {string} generationId
   */
  async cancel(generationId) {
    await this.request({ type: 'cancel', generation_id: generationId });
  }

  /**
   * The caller's pending and processing video jobs (`jobs`).
   * @returns {Promise<Job[]>}
   */
  async jobs() {
    const reply = await this.request({ type: 'jobs' });
    return reply.jobs || [];
  }

  /**
   * An application-level round trip; resolves with its duration in milliseconds.
   * @returns {Promise<number>}
   */
  async ping() {
    const t = Date.now();
    await this.request({ type: 'ping' });
    return Date.now() - t;
  }
}

// ---------------------------------------------------------------------------------------------
// Rooms

/**
 * One chat's room: its messages in `seq` order, once each, across reconnects; presence, typing
 * and AI replies. Created by `client.subscribe()`.
 * @extends {Emitter<RoomEvents>}
 */
export class Room extends Emitter {
  /**
   * @param {EchoClient} client
   * @param {string} chatId
   * @param {number | null} sinceSeq
   */
  constructor(client, chatId, sinceSeq) {
    super();
    /** @internal */
    this.client = client;
    this.chatId = chatId;
    /** The highest `seq` held: where the next subscription resumes. @type {number | null} */
    this.lastSeq = sinceSeq === null || sinceSeq === undefined ? null : Math.max(0, sinceSeq);
    /** Whether the room is subscribed on the current connection. */
    this.subscribed = false;
    /** Whether the user left it (or was removed): it no longer resubscribes. */
    this.closed = false;
    /** Users online in the room. @type {Set<string>} */
    this.online = new Set();
    /** Recent messages by id, to settle sends. @type {Map<string, Message>} @internal */
    this.recent = new Map();
    /** @type {Map<string, ((m: Message) => void)[]>} @internal */
    this.messageWaiters = new Map();
    /** Whether a `subscribe` is in flight. @internal */
    this.subscribing = false;
    /** @type {((e: SubscribedEvent) => void) | null} @internal */
    this.resolveReady = null;
    /** @type {((e: Error) => void) | null} @internal */
    this.rejectReady = null;
    /** Replies in flight in this room. @type {Map<string, Reply>} @internal */
    this.replies = new Map();
    /** Replies that got a snapshot during the current subscribe. @type {Set<string>} @internal */
    this.snapshotted = new Set();
    /** @internal */
    this.everSubscribed = false;
    /** @type {Promise<SubscribedEvent>} */
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {});
  }

  /**
   * Raises the point the next subscription resumes after (e.g. after reading history over
   * REST). Never lowers it.
   * @param {number | null | undefined} seq
   */
  resumeFrom(seq) {
    if (seq === null || seq === undefined) return;
    if (this.lastSeq === null || seq > this.lastSeq) this.lastSeq = seq;
  }

  /** Sends `subscribe` (with `since_seq` when a `seq` is held). @internal */
  async subscribeNow() {
    if (this.closed || this.subscribing || this.subscribed || this.client.state !== 'online') return;
    const client = this.client;
    const sinceSeq = this.lastSeq;
    const resumed = this.everSubscribed;
    this.snapshotted.clear();
    this.subscribing = true;
    /** @type {ServerFrame} */
    let reply;
    try {
      /** @type {ClientFrame} */
      const frame = { type: 'subscribe', chat_id: this.chatId };
      if (sinceSeq !== null) frame.since_seq = sinceSeq;
      reply = await client.request(frame);
    } catch (e) {
      this.subscribing = false;
      if (e instanceof NotFoundError) {
        this.close(e);
        this.emit('error', e);
      } else if (e instanceof RequestError && e.retryable && !(e instanceof DisconnectedError)) {
        // Timed out or refused for now: try again on this connection after a pause.
        setTimeout(() => { if (!this.subscribed) this.subscribeNow(); }, client.backoff(2));
      }
      return;
    }
    this.subscribing = false;
    if (this.closed) return;
    this.subscribed = true;
    this.everSubscribed = true;
    this.online = new Set(reply.online || []);
    const lastSeq = Number(reply.last_seq) || 0;
    const recovered = reply.recovered !== false;
    const missed = !recovered && sinceSeq !== null && lastSeq > sinceSeq
      ? { afterSeq: sinceSeq, throughSeq: lastSeq } : null;
    if (this.lastSeq === null || lastSeq > this.lastSeq) this.lastSeq = lastSeq;
    // Replies that were streaming and got no snapshot now ended while we were away.
    for (const r of [...this.replies.values()]) {
      if (!this.snapshotted.has(r.generationId) && r.stale) {
        this.replies.delete(r.generationId);
        r.endedUnseen();
      }
    }
    /** @type {SubscribedEvent} */
    const event = { lastSeq, recovered, missed, sinceSeq, online: [...this.online], resumed };
    this.resolveReady?.(event);
    this.emit('subscribed', event);
    client.flushOutbox(this);
  }

  /** @internal */
  onDropped() {
    this.subscribed = false;
    this.online.clear();
    for (const r of this.replies.values()) r.stale = true;
  }

  /**
   * A message of this chat from the server: delivered once, in `seq` order.
   * @param {Message} m
   * @internal
   */
  onMessage(m) {
    if (this.lastSeq !== null && m.seq <= this.lastSeq) {
      this.remember(m);
      return;
    }
    this.lastSeq = m.seq;
    this.remember(m);
    for (const r of this.replies.values()) r.onMessage(m);
    this.emit('message', m);
  }

  /** @param {Message} m @internal */
  remember(m) {
    this.recent.set(m.id, m);
    if (this.recent.size > this.client.messageCacheSize) {
      const oldest = this.recent.keys().next().value;
      if (oldest !== undefined) this.recent.delete(oldest);
    }
    const waiters = this.messageWaiters.get(m.id);
    if (waiters) {
      this.messageWaiters.delete(m.id);
      for (const w of waiters) w(m);
    }
  }

  /**
   * The stored message with this id: seen here, arriving soon, or read over REST.
   * @param {string} messageId
   * @param {number} seq
   * @returns {Promise<Message>}
   * @internal
   */
  async messageOf(messageId, seq) {
    const known = this.recent.get(messageId);
    if (known) return known;
    /** @type {(m: Message) => void} */
    let done = () => {};
    const arrived = new Promise((resolve) => { done = resolve; });
    const list = this.messageWaiters.get(messageId) || [];
    list.push(done);
    this.messageWaiters.set(messageId, list);
    const waited = await Promise.race([arrived, sleep(SETTLE_WAIT_MS).then(() => null)]);
    if (waited) return /** @type {Message} */ (waited);
    const left = (this.messageWaiters.get(messageId) || []).filter((w) => w !== done);
    if (left.length) this.messageWaiters.set(messageId, left);
    else this.messageWaiters.delete(messageId);
    // Not on the socket (an earlier attempt's message, seen before a reload): read it.
    for (;;) {
      const again = this.recent.get(messageId);
      if (again) return again;
      if (this.client.state === 'stopped') throw new DisconnectedError('the client was closed');
      /** @type {Message[]} */
      let page;
      try {
        page = await this.client.rest.messages(this.chatId, { after_seq: seq - 1, limit: 1 });
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) throw new NotFoundError('not_found', 'Chat not found');
        if (e instanceof ApiError && (e.status === 0 || e.status >= 500)) {
          await sleep(this.client.backoff(3)); // the server is away: read again later
          continue;
        }
        throw e;
      }
      const m = page.find((x) => x.id === messageId);
      if (!m) throw new EchoError(`message ${messageId} is not at seq ${seq}`);
      this.remember(m);
      return m;
    }
  }

  /** @param {ServerFrame} f @internal */
  onFrame(f) {
    switch (f.type) {
      case 'message':
        this.onMessage(f.message);
        return;
      case 'presence':
        if (f.state === 'join') this.online.add(f.user_id);
        else this.online.delete(f.user_id);
        this.emit('presence', { user_id: f.user_id, state: f.state });
        return;
      case 'typing':
        this.emit('typing', { user_id: f.user_id });
        return;
      case 'generation_started': {
        const r = this.track(f.generation_id);
        r.onStarted(f.message_id, f.model);
        return;
      }
      case 'generation_snapshot': {
        const r = this.track(f.generation_id);
        this.snapshotted.add(f.generation_id);
        r.onSnapshot(f.index, f.text);
        return;
      }
      case 'token':
        this.track(f.generation_id).onToken(f.index, f.delta);
        return;
      case 'generation_finished': {
        const r = this.track(f.generation_id);
        this.remember(f.message);
        this.replies.delete(f.generation_id);
        r.onFinished(f.message, f.finish_reason, f.usage);
        return;
      }
      case 'generation_failed': {
        const r = this.track(f.generation_id);
        this.replies.delete(f.generation_id);
        r.onFailed(f.error);
        return;
      }
      case 'chat_updated':
        this.emit('chat_updated', f.chat);
        return;
      case 'chat_deleted':
        this.close(new NotFoundError('not_found', 'Chat not found'));
        this.emit('chat_deleted', {});
        return;
      case 'member_added':
        this.emit('member_added', { user_id: f.user_id });
        return;
      case 'member_removed':
        this.emit('member_removed', { user_id: f.user_id });
        return;
      case 'unsubscribed':
        // The server removed us (we left the chat, or were removed).
        this.close(new NotFoundError('not_found', 'Chat not found'));
        this.emit('unsubscribed', { removed: true });
        return;
      default:
    }
  }

  /**
   * The room's reply for a generation (announced to `generation` listeners on first sight).
   * @param {string} generationId
   * @internal
   */
  track(generationId) {
    let r = this.replies.get(generationId);
    if (r) return r;
    const known = this.client.replies.has(generationId);
    r = this.client.reply(generationId, this.chatId);
    if (r.done) return r;
    this.replies.set(generationId, r);
    if (!known || !r.announced) {
      r.announced = true;
      this.emit('generation', r);
    }
    return r;
  }

  /**
   * Posts a message (see `EchoClient.send`).
   * @param {string} content
   * @param {{clientMsgId?: string}} [options]
   */
  send(content, options) {
    return this.client.send(this.chatId, content, options);
  }

  /**
   * Posts the user's message and starts an AI reply to it (`prompt`). Not queued: rejects with
   * `DisconnectedError` while offline.
   * @param {string} content
   * @param {{model?: string}} [options]
   * @returns {Promise<Reply>}
   */
  async prompt(content, { model } = {}) {
    /** @type {ClientFrame} */
    const frame = { type: 'prompt', chat_id: this.chatId, content };
    if (model) frame.model = model;
    const ack = await this.client.request(frame);
    const r = this.track(ack.generation_id);
    r.promptMessageId = ack.message_id;
    return r;
  }

  /** Tells the room the user is typing (the server forwards at most one a second). */
  typing() {
    if (this.subscribed) this.client.notify({ type: 'typing', chat_id: this.chatId });
  }

  /**
   * Reads over REST the messages a subscription with `recovered: false` did not replay, in
   * `seq` order.
   * @param {{afterSeq: number, throughSeq: number}} missed
   * @returns {Promise<Message[]>}
   */
  async fetchMissed(missed) {
    return this.client.rest.messagesBetween(this.chatId, missed.afterSeq, missed.throughSeq);
  }

  /** Leaves the room (`unsubscribe`) and stops following it. */
  async unsubscribe() {
    const wasSubscribed = this.subscribed;
    this.close();
    if (wasSubscribed) {
      await this.client.request({ type: 'unsubscribe', chat_id: this.chatId }).catch(() => {});
    }
    this.emit('unsubscribed', { removed: false });
  }

  /** @param {EchoError} [why] Fails the chat's unsent messages with it. @internal */
  close(why) {
    this.closed = true;
    this.subscribed = false;
    if (this.client.rooms.get(this.chatId) === this) this.client.rooms.delete(this.chatId);
    this.rejectReady?.(why ?? new NotFoundError('not_found', 'the room was closed'));
    if (why) {
      for (const entry of this.client.pendingSends(this.chatId)) this.client.fail(entry, why);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AI replies

/**
 * One AI reply in a room: iterate it for text deltas (`for await (const delta of reply)`);
 * a late joiner's first delta is the text so far. `result` resolves when it is stored.
 */
export class Reply {
  /**
   * @param {EchoClient} client
   * @param {string} generationId
   * @param {string} chatId
   */
  constructor(client, generationId, chatId) {
    /** @internal */
    this.client = client;
    this.generationId = generationId;
    this.chatId = chatId;
    /** The id the stored reply will have (unknown to a late joiner until it is stored). @type {string | null} */
    this.messageId = null;
    /** The id of the user's message that asked for it (for replies started here). @type {string | null} */
    this.promptMessageId = null;
    /** @type {string | null} */
    this.model = null;
    /** The text so far. */
    this.text = '';
    /** Index of the last token included in `text`. */
    this.index = -1;
    /** @type {'streaming' | 'finished' | 'failed'} */
    this.status = 'streaming';
    /** The stored reply, once known. @type {Message | null} */
    this.message = null;
    /** @type {string | null} */
    this.finishReason = null;
    /** @type {string | null} */
    this.error = null;
    this.done = false;
    /** Set while disconnected: tokens may have been missed. @internal */
    this.stale = false;
    /** @internal */
    this.announced = false;
    /** @type {Set<() => void>} @internal */
    this.wakers = new Set();
    /** @type {(r: ReplyResult) => void} @internal */
    this.resolveResult = () => {};
    /** @type {(e: Error) => void} @internal */
    this.rejectResult = () => {};
    /** Resolves when the reply is stored; rejects with `GenerationFailedError`. @type {Promise<ReplyResult>} */
    this.result = new Promise((resolve, reject) => {
      this.resolveResult = resolve;
      this.rejectResult = reject;
    });
    this.result.catch(() => {});
    /** @type {GenerationFailedError | null} @internal */
    this.failure = null;
  }

  /** @internal */
  wake() {
    for (const w of [...this.wakers]) w();
  }

  /**
   * @param {string} messageId
   * @param {string} model
   * @internal
   */
  onStarted(messageId, model) {
    this.messageId = messageId;
    this.model = model;
    this.wake();
  }

  /**
   * @param {number} index
   * @param {string} text
   * @internal
   */
  onSnapshot(index, text) {
    this.stale = false;
    if (index > this.index) {
      // What this client already showed is a prefix of the snapshot; the rest follows.
      this.text = text.startsWith(this.text) ? text : this.text + text.slice(Math.min(this.text.length, text.length));
      this.index = index;
      this.wake();
    }
  }

  /**
   * @param {number} index
   * @param {string} delta
   * @internal
   */
  onToken(index, delta) {
    if (index <= this.index || this.done) return; // already in a snapshot
    this.text += delta;
    this.index = index;
    this.wake();
  }

  /**
   * The stored reply arrived as a `message` (before `generation_finished`, or instead of it
   * when the reply ended while disconnected).
   * @param {Message} m
   * @internal
   */
  onMessage(m) {
    const mine = this.messageId ? m.id === this.messageId
      : m.role === 'assistant' && this.stale && m.content.startsWith(this.text);
    if (!mine || this.done) return;
    this.messageId = m.id;
    this.message = m;
    if (m.content.startsWith(this.text)) this.text = m.content;
    this.wake();
  }

  /**
   * @param {Message} message
   * @param {string} finishReason
   * @param {ReplyResult['usage']} usage
   * @internal
   */
  onFinished(message, finishReason, usage) {
    if (this.done) return;
    this.message = message;
    this.messageId = message.id;
    if (message.content.startsWith(this.text)) this.text = message.content;
    this.finishReason = finishReason;
    this.end('finished');
    this.resolveResult({ message, finishReason, usage: usage ?? null });
  }

  /** @param {string} error @internal */
  onFailed(error) {
    if (this.done) return;
    this.error = error;
    this.failure = new GenerationFailedError(error, this.message);
    this.end('failed');
    this.rejectResult(this.failure);
  }

  /** The reply ended while this client was disconnected (no snapshot on resubscribe). @internal */
  endedUnseen() {
    if (this.done) return;
    this.finishReason = null;
    this.end('finished');
    this.resolveResult({ message: this.message, finishReason: null, usage: null });
  }

  /** @param {'finished' | 'failed'} status @internal */
  end(status) {
    this.status = status;
    this.done = true;
    this.client.replies.delete(this.generationId);
    this.wake();
  }

  /** Stops the reply (`cancel`); it then finishes with `finishReason: 'cancelled'`. */
  cancel() {
    return this.client.cancel(this.generationId);
  }

  /**
   * Text deltas: the text so far first (a late joiner's snapshot), then each new piece; at the
   * end, whatever the stored reply adds to what was streamed. Throws `GenerationFailedError`
   * when the reply fails.
   * @returns {AsyncIterator<string>}
   */
  [Symbol.asyncIterator]() {
    let pos = 0;
    return {
      next: async () => {
        for (;;) {
          if (this.text.length > pos) {
            const value = this.text.slice(pos);
            pos = this.text.length;
            return { value, done: false };
          }
          if (this.done) {
            if (this.failure) throw this.failure;
            return { value: undefined, done: true };
          }
          await new Promise((resolve) => {
            const w = () => {
              this.wakers.delete(w);
              resolve(undefined);
            };
            this.wakers.add(w);
          });
        }
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// REST

/**
 * @typedef {object} RestOptions
 * @property {string | (() => string)} baseUrl The server's base URL (`https://echo.example.com`).
 * @property {() => (string | null | undefined | Promise<string | null | undefined>)} getToken
 * @property {typeof fetch} [fetch]
 * @property {(error: ApiError) => void} [onUnauthorized] Called on every 401.
 */

/** Helpers for Echo's REST routes (docs/API.md): JSON in, JSON out, `ApiError` on failure. */
export class EchoRest {
  /** @param {RestOptions} options */
  constructor(options) {
    /** @internal */
    this.options = options;
  }

  /** The base URL requests go to. */
  get baseUrl() {
    const b = this.options.baseUrl;
    return (typeof b === 'function' ? b() : b).replace(/\/+$/, '');
  }

  /**
   * One request; resolves with the parsed JSON body (null for 204).
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body] JSON, or a `FormData`.
   * @returns {Promise<any>}
   */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json' };
    const token = await this.options.getToken();
    if (token) headers.authorization = `Bearer ${token}`;
    const form = typeof FormData !== 'undefined' && body instanceof FormData;
    if (body !== undefined && !form) headers['content-type'] = 'application/json';
    const f = this.options.fetch ?? globalThis.fetch;
    /** @type {Response} */
    let res;
    try {
      res = await f(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : form ? /** @type {FormData} */ (body) : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, null);
    }
    if (res.status === 204) return null;
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const error = new ApiError(res.status, data?.detail);
      if (res.status === 401 && token) this.options.onUnauthorized?.(error);
      throw error;
    }
    return data;
  }

  /** @param {string} path */
  get(path) { return this.request('GET', path); }
  /** @param {string} path @param {unknown} [body] */
  post(path, body) { return this.request('POST', path, body); }
  /** @param {string} path @param {unknown} [body] */
  put(path, body) { return this.request('PUT', path, body); }
  /** @param {string} path */
  delete(path) { return this.request('DELETE', path); }

  /** `GET /users/me`. @returns {Promise<User>} */
  me() { return this.get('/users/me'); }
  /** `GET /users/{id}`. @param {string} id @returns {Promise<User>} */
  user(id) { return this.get(`/users/${encodeURIComponent(id)}`); }
  /** `GET /chats/`. @param {{skip?: number, limit?: number}} [query] @returns {Promise<Chat[]>} */
  chats(query = { limit: 100 }) { return this.get(`/chats/?${qs(query)}`); }
  /** `POST /chats/`. @param {string} [title] @returns {Promise<ChatDetail>} */
  createChat(title) { return this.post('/chats/', title ? { title } : {}); }
  /** `GET /chats/{id}`. @param {string} id @returns {Promise<ChatDetail>} */
  chat(id) { return this.get(`/chats/${encodeURIComponent(id)}`); }
  /** `PUT /chats/{id}`. @param {string} id @param {string} title @returns {Promise<Chat>} */
  renameChat(id, title) { return this.put(`/chats/${encodeURIComponent(id)}`, { title }); }
  /** `DELETE /chats/{id}`. @param {string} id */
  deleteChat(id) { return this.delete(`/chats/${encodeURIComponent(id)}`); }
  /** `POST /chats/{id}/members`. @param {string} id @param {string} userId */
  addMember(id, userId) {
    return this.post(`/chats/${encodeURIComponent(id)}/members`, { user_id: userId });
  }
  /** `DELETE /chats/{id}/members/{user_id}`. @param {string} id @param {string} userId */
  removeMember(id, userId) {
    return this.delete(`/chats/${encodeURIComponent(id)}/members/${encodeURIComponent(userId)}`);
  }
  /**
   * `GET /chats/{id}/messages/`: a page in ascending `seq`.
   * @param {string} id
   * @param {{skip?: number, limit?: number, after_seq?: number, before_seq?: number}} [query]
   * @returns {Promise<Message[]>}
   */
  messages(id, query = {}) {
    return this.get(`/chats/${encodeURIComponent(id)}/messages/?${qs(query)}`);
  }
  /**
   * Every message with `afterSeq` < `seq` <= `throughSeq`, paging as needed (reading the gap
   * of a subscription with `recovered: false`).
   * @param {string} id
   * @param {number} afterSeq
   * @param {number} throughSeq
   * @returns {Promise<Message[]>}
   */
  async messagesBetween(id, afterSeq, throughSeq) {
    /** @type {Message[]} */
    const out = [];
    let after = afterSeq;
    while (after < throughSeq) {
      const page = await this.messages(id, { after_seq: after, limit: 100 });
      for (const m of page) if (m.seq <= throughSeq) out.push(m);
      if (page.length < 100) break;
      after = page[page.length - 1].seq;
    }
    return out;
  }
  /**
   * `POST /messages/`, idempotent with `client_msg_id`.
   * @param {string} chatId
   * @param {string} content
   * @param {{clientMsgId?: string, isFromAi?: boolean}} [options]
   * @returns {Promise<Message>}
   */
  postMessage(chatId, content, { clientMsgId, isFromAi } = {}) {
    /** @type {Record<string, unknown>} */
    const body = { chat_id: chatId, content };
    if (clientMsgId) body.client_msg_id = clientMsgId;
    if (isFromAi) body.is_from_ai = true;
    return this.post('/messages/', body);
  }
  /** `GET /api/v1/videos/{id}`. @param {number} id */
  video(id) { return this.get(`/api/v1/videos/${encodeURIComponent(id)}`); }
  /** `GET /api/v1/videos/jobs/{id}`. @param {number} id @returns {Promise<Job>} */
  job(id) { return this.get(`/api/v1/videos/jobs/${encodeURIComponent(id)}`); }
  /**
   * `GET /api/v1/jobs/` (default statuses: pending and processing).
   * @param {{status?: Job['status'][], skip?: number, limit?: number}} [query]
   * @returns {Promise<Job[]>}
   */
  jobs({ status = [], ...rest } = {}) {
    const q = [...status.map((s) => `status=${encodeURIComponent(s)}`), qs(rest)].filter(Boolean).join('&');
    return this.get(`/api/v1/jobs/?${q}`);
  }
  /** `POST /api/v1/jobs/{id}/cancel`. @param {number} id @returns {Promise<Job>} */
  cancelJob(id) { return this.post(`/api/v1/jobs/${encodeURIComponent(id)}/cancel`); }
  /**
   * `POST /api/v1/videos/upload` (multipart; for upload progress in a browser use
   * XMLHttpRequest instead).
   * @param {Blob} file
   * @param {string} [filename]
   * @returns {Promise<{video_id: number, job_id: number, status: string}>}
   */
  uploadVideo(file, filename = 'video.mp4') {
    const form = new FormData();
    form.append('file', file, filename);
    return this.post('/api/v1/videos/upload', form);
  }
  /** `GET /users/me/videos`. */
  myVideos() { return this.get('/users/me/videos'); }
}

/** @param {Record<string, unknown>} query */
function qs(query) {
  /** @type {string[]} */
  const parts = [];
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  }
  return parts.join('&');
}
