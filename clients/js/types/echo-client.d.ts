/**
 * The typed error of an `error` frame.
 * @param {{code?: unknown, message?: unknown, [field: string]: unknown}} frame
 * @returns {RequestError}
 */
export function errorFromFrame(frame: {
    code?: unknown;
    message?: unknown;
    [field: string]: unknown;
}): RequestError;
/**
 * The typed error of a close code (and its reason text).
 * @param {number} code
 * @param {string} [reason]
 * @returns {CloseError}
 */
export function closeError(code: number, reason?: string): CloseError;
/** A v4 UUID (`crypto.randomUUID` exists only on secure origins; `getRandomValues` everywhere). */
export function uuid(): string;
/**
 * Reads a JWT's claims without verifying them (the server does that).
 * @param {string | null | undefined} token
 * @returns {{sub?: string, exp?: number, [claim: string]: any} | null}
 */
export function tokenClaims(token: string | null | undefined): {
    sub?: string;
    exp?: number;
    [claim: string]: any;
} | null;
/**
 * The HTTP base URL and the WebSocket URL of one configured server URL.
 * @param {string} url
 * @returns {{http: string, ws: string}}
 */
export function serverUrls(url: string): {
    http: string;
    ws: string;
};
/**
 * An outbox kept in memory: it lasts as long as the object (share it to outlive a client).
 * @returns {OutboxStorage}
 */
export function memoryStorage(): OutboxStorage;
/**
 * An outbox kept in the browser's `localStorage` under `key` (use one key per user), so sends
 * survive a reload; falls back to memory where storage is unavailable.
 * @param {string} key
 * @returns {OutboxStorage}
 */
export function localStorageOutbox(key: string): OutboxStorage;
/**
 * Connects to Echo and keeps the connection up until `close()`.
 * @param {ConnectOptions} options
 * @returns {EchoClient}
 */
export function connect(options: ConnectOptions): EchoClient;
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
/** Every error this library throws or reports. */
export class EchoError extends Error {
    /**
     * @param {string} message
     * @param {{cause?: unknown}} [options]
     */
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/** A request failed: an `error` frame (`code` from docs/PROTOCOL.md#error-codes), or locally. */
export class RequestError extends EchoError {
    /**
     * @param {string} code
     * @param {string} message
     */
    constructor(code: string, message: string);
    /** The protocol's error code (`not_found`, …) or `disconnected` / `timeout`. */
    code: string;
    /** Whether repeating the request later may succeed. */
    get retryable(): boolean;
}
/** `bad_request`: a malformed frame or invalid field; the message names it. */
export class BadRequestError extends RequestError {
}
/** `unauthorized`: `refresh_token` with an invalid token or one for another user. */
export class UnauthorizedError extends RequestError {
}
/** `forbidden` (REST only in protocol version 1). */
export class ForbiddenError extends RequestError {
}
/** `not_found`: a chat the caller is not a member of, or a reply not in flight. */
export class NotFoundError extends RequestError {
}
/** `conflict` (REST only in protocol version 1). */
export class ConflictError extends RequestError {
}
/** `too_large` (REST only in protocol version 1). */
export class TooLargeError extends RequestError {
}
/** `rate_limited`: frames too fast, or too many AI replies in flight. */
export class RateLimitedError extends RequestError {
}
/** `unavailable`: the database cannot serve now. */
export class UnavailableError extends RequestError {
}
/** `internal`: an unexpected failure on the server. */
export class InternalError extends RequestError {
}
/** The connection was not open, or dropped before the reply arrived. */
export class DisconnectedError extends RequestError {
    /** @param {string} [message] */
    constructor(message?: string);
}
/** No reply within `requestTimeoutMs`. */
export class TimeoutError extends RequestError {
    /** @param {string} [message] */
    constructor(message?: string);
}
/** The `error` codes of docs/PROTOCOL.md#error-codes and their classes. */
export const ERROR_CLASSES: Readonly<{
    bad_request: typeof BadRequestError;
    unauthorized: typeof UnauthorizedError;
    forbidden: typeof ForbiddenError;
    not_found: typeof NotFoundError;
    conflict: typeof ConflictError;
    too_large: typeof TooLargeError;
    rate_limited: typeof RateLimitedError;
    unavailable: typeof UnavailableError;
    internal: typeof InternalError;
}>;
/** The socket closed (docs/PROTOCOL.md#close-codes). */
export class CloseError extends EchoError {
    /**
     * @param {number} code
     * @param {string} reason
     * @param {string} [message]
     */
    constructor(code: number, reason: string, message?: string);
    /** The WebSocket close code. */
    code: number;
    /** The close frame's reason text. */
    reason: string;
}
/** 1000: the session ended normally (`bye`). */
export class NormalClosureError extends CloseError {
}
/** 1000 `heartbeat timeout`: the server heard nothing from this client for too long. */
export class HeartbeatTimeoutError extends CloseError {
}
/** 1001: the node is shutting down. */
export class GoingAwayError extends CloseError {
}
/** 1002: an RFC 6455 violation. */
export class ProtocolViolationError extends CloseError {
}
/** 1006 (and other codes without a close frame): the connection was lost. */
export class ConnectionLostError extends CloseError {
}
/** 1007: a text message that was not valid UTF-8. */
export class InvalidUtf8Error extends CloseError {
}
/** 1009: a message over `max_frame_bytes`. */
export class MessageTooLargeError extends CloseError {
}
/** 4000: this client closed a socket that stopped answering (no welcome, no pong). */
export class StaleConnectionError extends CloseError {
}
/** 4001: the token expired without a successful `refresh_token`. */
export class TokenExpiredError extends CloseError {
}
/** 4008: this client did not read fast enough. */
export class SlowConsumerError extends CloseError {
}
/** 4029: the client kept sending after `rate_limited`. */
export class RateLimitExceededError extends CloseError {
}
/** 4030: the user holds too many sockets on that node. */
export class TooManySessionsError extends CloseError {
}
/** An AI reply failed (`generation_failed`); `message` is the partial text stored, if any. */
export class GenerationFailedError extends EchoError {
    /**
     * @param {string} message
     * @param {Message | null} stored
     */
    constructor(message: string, stored: Message | null);
    /** The text stored before the failure, as a message (or null). */
    stored: Message | null;
}
/** An HTTP error of the REST API, with FastAPI's `detail`. */
export class ApiError extends EchoError {
    /**
     * @param {number} status 0 when the server could not be reached.
     * @param {unknown} detail
     */
    constructor(status: number, detail: unknown);
    status: number;
    detail: unknown;
}
/**
 * A minimal typed event emitter.
 * @template {object} Events
 */
export class Emitter<Events extends object> {
    /** @type {Map<keyof Events, Set<(value: any) => void>>} @internal */
    listeners: Map<keyof Events, Set<(value: any) => void>>;
    /**
     * Calls `fn` with every `type` event; returns a function that removes it.
     * @template {keyof Events} K
     * @param {K} type
     * @param {(value: Events[K]) => void} fn
     * @returns {() => void}
     */
    on<K extends keyof Events>(type: K, fn: (value: Events[K]) => void): () => void;
    /**
     * @template {keyof Events} K
     * @param {K} type
     * @param {(value: Events[K]) => void} fn
     */
    off<K extends keyof Events>(type: K, fn: (value: Events[K]) => void): void;
    /**
     * @template {keyof Events} K
     * @param {K} type
     * @param {Events[K]} value
     */
    emit<K extends keyof Events>(type: K, value: Events[K]): void;
}
/**
 * One realtime connection to Echo (create it with `connect()`; `new EchoClient()` does not
 * connect until `start()`).
 * @extends {Emitter<ClientEvents>}
 */
export class EchoClient extends Emitter<ClientEvents> {
    /** @param {ConnectOptions} options */
    constructor(options: ConnectOptions);
    /** The configured servers (`{http, ws}` each). */
    servers: {
        http: string;
        ws: string;
    }[];
    /** @internal */
    options: ConnectOptions;
    getToken: () => (string | null | undefined | Promise<string | null | undefined>);
    baseDelayMs: number;
    maxDelayMs: number;
    requestTimeoutMs: number;
    refreshMarginMs: number;
    messageCacheSize: number;
    /** @type {ConnectionState} */
    state: ConnectionState;
    /** Failed attempts since the last session began. */
    attempt: number;
    /** The `welcome` of the current (or last) session. @type {Welcome | null} */
    welcome: Welcome | null;
    /** Why the last connection ended, for people. */
    reason: string;
    /** The token of the current session. @type {string | null} */
    token: string | null;
    /** Index in `servers` of the current (or next) server. */
    serverIndex: number;
    /** Rooms by chat id. @type {Map<string, Room>} */
    rooms: Map<string, Room>;
    /** Replies by generation id. @type {Map<string, Reply>} */
    replies: Map<string, Reply>;
    /** REST helpers, on the server currently used. */
    rest: EchoRest;
    /** @type {WebSocketLike | null} @internal */
    ws: WebSocketLike | null;
    /** @type {Map<string, {resolve: (f: ServerFrame) => void, reject: (e: Error) => void, timer: ReturnType<typeof setTimeout>}>} @internal */
    pending: Map<string, {
        resolve: (f: ServerFrame) => void;
        reject: (e: Error) => void;
        timer: ReturnType<typeof setTimeout>;
    }>;
    /** @internal */
    nextId: number;
    /** @internal */
    connectedOnce: boolean;
    /** @type {ReturnType<typeof setTimeout> | undefined} @internal */
    timer: ReturnType<typeof setTimeout> | undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} @internal */
    refreshTimer: ReturnType<typeof setTimeout> | undefined;
    /** @type {ReturnType<typeof setInterval> | undefined} @internal */
    heartbeat: ReturnType<typeof setInterval> | undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} @internal */
    welcomeTimer: ReturnType<typeof setTimeout> | undefined;
    /** Counts calls of `open()`. @internal */
    opening: number;
    /** When the planned refresh is due (epoch ms). @internal */
    refreshDueAt: number;
    /** @internal */
    storage: OutboxStorage;
    /** @type {Map<string, OutboxEntry>} @internal */
    outbox: Map<string, OutboxEntry>;
    /** Entries this client settled or dropped, so that saving does not bring them back. @type {Set<string>} @internal */
    removed: Set<string>;
    /** Sends on the wire now, by client_msg_id. @type {Set<string>} @internal */
    inflight: Set<string>;
    /** Promises of `send()` callers, by client_msg_id. @type {Map<string, {resolve: (m: Message) => void, reject: (e: Error) => void}[]>} @internal */
    sendWaiters: Map<string, {
        resolve: (m: Message) => void;
        reject: (e: Error) => void;
    }[]>;
    /** Retries of sends refused for now (`unavailable`, `rate_limited`), by client_msg_id. @internal */
    retryTries: Map<any, any>;
    /** @internal */
    onOnline: () => void;
    /** Opens the connection (and keeps it open until `close()`); returns the client. */
    start(): this;
    /** Closes for good: pending requests fail, the outbox is kept (in its storage). */
    close(): void;
    /** Skips the wait before the next reconnection attempt. */
    retryNow(): void;
    /**
     * The reconnect delay of an attempt: equal jitter, half the exponential step plus a random
     * share of the other half (steps `baseDelayMs` · 2^(attempt−1), at most `maxDelayMs`).
     * @param {number} [attempt]
     */
    backoff(attempt?: number): number;
    /** The server currently used (`{http, ws}`). */
    get server(): {
        http: string;
        ws: string;
    };
    /**
     * @param {ConnectionState} state
     * @param {Partial<StateEvent>} [extra]
     * @internal
     */
    setState(state: ConnectionState, extra?: Partial<StateEvent>): void;
    /** @returns {boolean} @internal */
    networkDown(): boolean;
    /** @internal */
    open(): Promise<void>;
    /**
     * @param {number} delayMs
     * @param {string} [reason]
     * @param {EchoError} [error]
     * @internal
     */
    schedule(delayMs: number, reason?: string, error?: EchoError): void;
    /** @param {Welcome} welcome @internal */
    onWelcome(welcome: Welcome): void;
    /** An application-level ping: a socket that stopped delivering is closed and reopened. @internal */
    checkAlive(): void;
    /** Plans the next `refresh_token`: `refreshMarginMs` before `exp`, at most a quarter early. @internal */
    scheduleRefresh(): void;
    /** Extends the live session with a newer token from `getToken` (`refresh_token`). @internal */
    refresh(): Promise<void>;
    /** @param {ServerFrame} frame @internal */
    onFrame(frame: ServerFrame): void;
    /**
     * Sends a request frame and resolves with its reply; rejects with a typed `RequestError`.
     * The frame's `id` is assigned here.
     * @param {ClientFrame} frame
     * @param {{timeoutMs?: number}} [options]
     * @returns {Promise<ServerFrame>}
     */
    request(frame: ClientFrame, { timeoutMs }?: {
        timeoutMs?: number;
    }): Promise<ServerFrame>;
    /**
     * Sends a frame that has no reply (`typing`); dropped while not connected.
     * @param {ClientFrame} frame
     */
    notify(frame: ClientFrame): void;
    /** @param {Error} error @internal */
    failPending(error: Error): void;
    /**
     * Joins a chat's room (again after every reconnect, resuming after the last `seq` seen).
     * Returns the same `Room` while it is subscribed.
     * @param {string} chatId
     * @param {{sinceSeq?: number | null}} [options] Resume after this `seq` (replaying what
     *   followed it); without it, the room starts at the chat's current end.
     * @returns {Room}
     */
    subscribe(chatId: string, { sinceSeq }?: {
        sinceSeq?: number | null;
    }): Room;
    /**
     * Posts a message through the outbox (subscribing to the chat if needed). Resolves once with
     * the stored message, across reconnects; rejects only when the server refuses it for good
     * (or `close()` is called first: the entry then stays in the outbox's storage).
     * @param {string} chatId
     * @param {string} content
     * @param {{clientMsgId?: string}} [options]
     * @returns {Promise<Message>}
     */
    send(chatId: string, content: string, { clientMsgId }?: {
        clientMsgId?: string;
    }): Promise<Message>;
    /**
     * A promise of the stored message of an outbox entry (for entries restored from storage).
     * @param {string} clientMsgId
     * @returns {Promise<Message>}
     */
    waitForSend(clientMsgId: string): Promise<Message>;
    /**
     * The sends not yet stored and seen, oldest first (optionally of one chat).
     * @param {string} [chatId]
     * @returns {OutboxEntry[]}
     */
    pendingSends(chatId?: string): OutboxEntry[];
    /**
     * Drops a send from the outbox (its promise rejects). A send already on the wire may still
     * be stored.
     * @param {string} clientMsgId
     */
    discardSend(clientMsgId: string): void;
    /**
     * Writes the outbox to its storage, keeping entries another client sharing the storage (a
     * second tab) added meanwhile.
     * @internal
     */
    saveOutbox(): void;
    /**
     * Transmits every outbox entry of a room (after each subscription).
     * @param {Room} room
     * @internal
     */
    flushOutbox(room: Room): void;
    /**
     * Sends (or re-sends, under the same `client_msg_id`) one outbox entry.
     * @param {string} clientMsgId
     * @internal
     */
    transmit(clientMsgId: string): Promise<void>;
    /**
     * @param {OutboxEntry} entry
     * @param {Message} message
     * @internal
     */
    settle(entry: OutboxEntry, message: Message): void;
    /**
     * @param {OutboxEntry} entry
     * @param {EchoError} error
     * @internal
     */
    fail(entry: OutboxEntry, error: EchoError): void;
    /**
     * Removes an entry from the outbox for good (stored or refused) and hands back the send()
     * promises waiting on it; null when it was no longer there (already settled).
     * @param {OutboxEntry} entry
     * @returns {{resolve: (m: Message) => void, reject: (e: Error) => void}[] | null}
     * @internal
     */
    takeFromOutbox(entry: OutboxEntry): {
        resolve: (m: Message) => void;
        reject: (e: Error) => void;
    }[] | null;
    /**
     * The reply of a generation id (created on first sight).
     * @param {string} generationId
     * @param {string} chatId
     * @returns {Reply}
     * @internal
     */
    reply(generationId: string, chatId: string): Reply;
    /**
     * Stops an AI reply, wherever it runs (`cancel`).
     * @param {string} generationId
     */
    cancel(generationId: string): Promise<void>;
    /**
     * The caller's pending and processing video jobs (`jobs`).
     * @returns {Promise<Job[]>}
     */
    jobs(): Promise<Job[]>;
    /**
     * An application-level round trip; resolves with its duration in milliseconds.
     * @returns {Promise<number>}
     */
    ping(): Promise<number>;
}
/**
 * One chat's room: its messages in `seq` order, once each, across reconnects; presence, typing
 * and AI replies. Created by `client.subscribe()`.
 * @extends {Emitter<RoomEvents>}
 */
export class Room extends Emitter<RoomEvents> {
    /**
     * @param {EchoClient} client
     * @param {string} chatId
     * @param {number | null} sinceSeq
     */
    constructor(client: EchoClient, chatId: string, sinceSeq: number | null);
    /** @internal */
    client: EchoClient;
    chatId: string;
    /** The highest `seq` held: where the next subscription resumes. @type {number | null} */
    lastSeq: number | null;
    /** Whether the room is subscribed on the current connection. */
    subscribed: boolean;
    /** Whether the user left it (or was removed): it no longer resubscribes. */
    closed: boolean;
    /** Users online in the room. @type {Set<string>} */
    online: Set<string>;
    /** Recent messages by id, to settle sends. @type {Map<string, Message>} @internal */
    recent: Map<string, Message>;
    /** @type {Map<string, ((m: Message) => void)[]>} @internal */
    messageWaiters: Map<string, ((m: Message) => void)[]>;
    /** Whether a `subscribe` is in flight. @internal */
    subscribing: boolean;
    /** @type {((e: SubscribedEvent) => void) | null} @internal */
    resolveReady: ((e: SubscribedEvent) => void) | null;
    /** @type {((e: Error) => void) | null} @internal */
    rejectReady: ((e: Error) => void) | null;
    /** Replies in flight in this room. @type {Map<string, Reply>} @internal */
    replies: Map<string, Reply>;
    /** Replies that got a snapshot during the current subscribe. @type {Set<string>} @internal */
    snapshotted: Set<string>;
    /** @internal */
    everSubscribed: boolean;
    /** @type {Promise<SubscribedEvent>} */
    ready: Promise<SubscribedEvent>;
    /**
     * Raises the point the next subscription resumes after (e.g. after reading history over
     * REST). Never lowers it.
     * @param {number | null | undefined} seq
     */
    resumeFrom(seq: number | null | undefined): void;
    /** Sends `subscribe` (with `since_seq` when a `seq` is held). @internal */
    subscribeNow(): Promise<void>;
    /** @internal */
    onDropped(): void;
    /**
     * A message of this chat from the server: delivered once, in `seq` order.
     * @param {Message} m
     * @internal
     */
    onMessage(m: Message): void;
    /** @param {Message} m @internal */
    remember(m: Message): void;
    /**
     * The stored message with this id: seen here, arriving soon, or read over REST.
     * @param {string} messageId
     * @param {number} seq
     * @returns {Promise<Message>}
     * @internal
     */
    messageOf(messageId: string, seq: number): Promise<Message>;
    /** @param {ServerFrame} f @internal */
    onFrame(f: ServerFrame): void;
    /**
     * The room's reply for a generation (announced to `generation` listeners on first sight).
     * @param {string} generationId
     * @internal
     */
    track(generationId: string): Reply;
    /**
     * Posts a message (see `EchoClient.send`).
     * @param {string} content
     * @param {{clientMsgId?: string}} [options]
     */
    send(content: string, options?: {
        clientMsgId?: string;
    }): Promise<Message>;
    /**
     * Posts the user's message and starts an AI reply to it (`prompt`). Not queued: rejects with
     * `DisconnectedError` while offline.
     * @param {string} content
     * @param {{model?: string}} [options]
     * @returns {Promise<Reply>}
     */
    prompt(content: string, { model }?: {
        model?: string;
    }): Promise<Reply>;
    /** Tells the room the user is typing (the server forwards at most one a second). */
    typing(): void;
    /**
     * Reads over REST the messages a subscription with `recovered: false` did not replay, in
     * `seq` order.
     * @param {{afterSeq: number, throughSeq: number}} missed
     * @returns {Promise<Message[]>}
     */
    fetchMissed(missed: {
        afterSeq: number;
        throughSeq: number;
    }): Promise<Message[]>;
    /** Leaves the room (`unsubscribe`) and stops following it. */
    unsubscribe(): Promise<void>;
    /** @param {EchoError} [why] Fails the chat's unsent messages with it. @internal */
    close(why?: EchoError): void;
}
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
    constructor(client: EchoClient, generationId: string, chatId: string);
    /** @internal */
    client: EchoClient;
    generationId: string;
    chatId: string;
    /** The id the stored reply will have (unknown to a late joiner until it is stored). @type {string | null} */
    messageId: string | null;
    /** The id of the user's message that asked for it (for replies started here). @type {string | null} */
    promptMessageId: string | null;
    /** @type {string | null} */
    model: string | null;
    /** The text so far. */
    text: string;
    /** Index of the last token included in `text`. */
    index: number;
    /** @type {'streaming' | 'finished' | 'failed'} */
    status: "streaming" | "finished" | "failed";
    /** The stored reply, once known. @type {Message | null} */
    message: Message | null;
    /** @type {string | null} */
    finishReason: string | null;
    /** @type {string | null} */
    error: string | null;
    done: boolean;
    /** Set while disconnected: tokens may have been missed. @internal */
    stale: boolean;
    /** @internal */
    announced: boolean;
    /** @type {Set<() => void>} @internal */
    wakers: Set<() => void>;
    /** @type {(r: ReplyResult) => void} @internal */
    resolveResult: (r: ReplyResult) => void;
    /** @type {(e: Error) => void} @internal */
    rejectResult: (e: Error) => void;
    /** Resolves when the reply is stored; rejects with `GenerationFailedError`. @type {Promise<ReplyResult>} */
    result: Promise<ReplyResult>;
    /** @type {GenerationFailedError | null} @internal */
    failure: GenerationFailedError | null;
    /** @internal */
    wake(): void;
    /**
     * @param {string} messageId
     * @param {string} model
     * @internal
     */
    onStarted(messageId: string, model: string): void;
    /**
     * @param {number} index
     * @param {string} text
     * @internal
     */
    onSnapshot(index: number, text: string): void;
    /**
     * @param {number} index
     * @param {string} delta
     * @internal
     */
    onToken(index: number, delta: string): void;
    /**
     * The stored reply arrived as a `message` (before `generation_finished`, or instead of it
     * when the reply ended while disconnected).
     * @param {Message} m
     * @internal
     */
    onMessage(m: Message): void;
    /**
     * @param {Message} message
     * @param {string} finishReason
     * @param {ReplyResult['usage']} usage
     * @internal
     */
    onFinished(message: Message, finishReason: string, usage: ReplyResult["usage"]): void;
    /** @param {string} error @internal */
    onFailed(error: string): void;
    /** The reply ended while this client was disconnected (no snapshot on resubscribe). @internal */
    endedUnseen(): void;
    /** @param {'finished' | 'failed'} status @internal */
    end(status: "finished" | "failed"): void;
    /** Stops the reply (`cancel`); it then finishes with `finishReason: 'cancelled'`. */
    cancel(): Promise<void>;
    /**
     * Text deltas: the text so far first (a late joiner's snapshot), then each new piece; at the
     * end, whatever the stored reply adds to what was streamed. Throws `GenerationFailedError`
     * when the reply fails.
     * @returns {AsyncIterator<string>}
     */
    [Symbol.asyncIterator](): AsyncIterator<string>;
}
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
    constructor(options: RestOptions);
    /** @internal */
    options: RestOptions;
    /** The base URL requests go to. */
    get baseUrl(): string;
    /**
     * One request; resolves with the parsed JSON body (null for 204).
     * @param {string} method
     * @param {string} path
     * @param {unknown} [body] JSON, or a `FormData`.
     * @returns {Promise<any>}
     */
    request(method: string, path: string, body?: unknown): Promise<any>;
    /** @param {string} path */
    get(path: string): Promise<any>;
    /** @param {string} path @param {unknown} [body] */
    post(path: string, body?: unknown): Promise<any>;
    /** @param {string} path @param {unknown} [body] */
    put(path: string, body?: unknown): Promise<any>;
    /** @param {string} path */
    delete(path: string): Promise<any>;
    /** `GET /users/me`. @returns {Promise<User>} */
    me(): Promise<User>;
    /** `GET /users/{id}`. @param {string} id @returns {Promise<User>} */
    user(id: string): Promise<User>;
    /** `GET /chats/`. @param {{skip?: number, limit?: number}} [query] @returns {Promise<Chat[]>} */
    chats(query?: {
        skip?: number;
        limit?: number;
    }): Promise<Chat[]>;
    /** `POST /chats/`. @param {string} [title] @returns {Promise<ChatDetail>} */
    createChat(title?: string): Promise<ChatDetail>;
    /** `GET /chats/{id}`. @param {string} id @returns {Promise<ChatDetail>} */
    chat(id: string): Promise<ChatDetail>;
    /** `PUT /chats/{id}`. @param {string} id @param {string} title @returns {Promise<Chat>} */
    renameChat(id: string, title: string): Promise<Chat>;
    /** `DELETE /chats/{id}`. @param {string} id */
    deleteChat(id: string): Promise<any>;
    /** `POST /chats/{id}/members`. @param {string} id @param {string} userId */
    addMember(id: string, userId: string): Promise<any>;
    /** `DELETE /chats/{id}/members/{user_id}`. @param {string} id @param {string} userId */
    removeMember(id: string, userId: string): Promise<any>;
    /**
     * `GET /chats/{id}/messages/`: a page in ascending `seq`.
     * @param {string} id
     * @param {{skip?: number, limit?: number, after_seq?: number, before_seq?: number}} [query]
     * @returns {Promise<Message[]>}
     */
    messages(id: string, query?: {
        skip?: number;
        limit?: number;
        after_seq?: number;
        before_seq?: number;
    }): Promise<Message[]>;
    /**
     * Every message with `afterSeq` < `seq` <= `throughSeq`, paging as needed (reading the gap
     * of a subscription with `recovered: false`).
     * @param {string} id
     * @param {number} afterSeq
     * @param {number} throughSeq
     * @returns {Promise<Message[]>}
     */
    messagesBetween(id: string, afterSeq: number, throughSeq: number): Promise<Message[]>;
    /**
     * `POST /messages/`, idempotent with `client_msg_id`.
     * @param {string} chatId
     * @param {string} content
     * @param {{clientMsgId?: string, isFromAi?: boolean}} [options]
     * @returns {Promise<Message>}
     */
    postMessage(chatId: string, content: string, { clientMsgId, isFromAi }?: {
        clientMsgId?: string;
        isFromAi?: boolean;
    }): Promise<Message>;
    /** `GET /api/v1/videos/{id}`. @param {number} id */
    video(id: number): Promise<any>;
    /** `GET /api/v1/videos/jobs/{id}`. @param {number} id @returns {Promise<Job>} */
    job(id: number): Promise<Job>;
    /**
     * `GET /api/v1/jobs/` (default statuses: pending and processing).
     * @param {{status?: Job['status'][], skip?: number, limit?: number}} [query]
     * @returns {Promise<Job[]>}
     */
    jobs({ status, ...rest }?: {
        status?: Job["status"][];
        skip?: number;
        limit?: number;
    }): Promise<Job[]>;
    /** `POST /api/v1/jobs/{id}/cancel`. @param {number} id @returns {Promise<Job>} */
    cancelJob(id: number): Promise<Job>;
    /**
     * `POST /api/v1/videos/upload` (multipart; for upload progress in a browser use
     * XMLHttpRequest instead).
     * @param {Blob} file
     * @param {string} [filename]
     * @returns {Promise<{video_id: number, job_id: number, status: string}>}
     */
    uploadVideo(file: Blob, filename?: string): Promise<{
        video_id: number;
        job_id: number;
        status: string;
    }>;
    /** `GET /users/me/videos`. */
    myVideos(): Promise<any>;
}
/**
 * A stored message (`MessageResponse`).
 */
export type Message = {
    id: string;
    chat_id: string;
    content: string;
    is_from_ai: boolean;
    role: "user" | "assistant" | "system";
    user_id: string | null;
    seq: number;
    created_at: string;
};
/**
 * A chat (`ChatResponse`).
 */
export type Chat = {
    id: string;
    title: string;
    created_at: string;
    updated_at: string;
};
/**
 * A chat with its latest messages (`ChatDetailResponse`).
 */
export type ChatDetail = Chat & {
    messages: Message[];
};
/**
 * A user (`UserResponse`).
 */
export type User = {
    id: string;
    email?: string | null | undefined;
    username?: string | null | undefined;
    full_name?: string | null | undefined;
};
/**
 * A video job (`VideoJobWithDetailsResponse`; `job` events carry it without `video` and
 * `video_metadata`).
 */
export type Job = {
    id: number;
    video_id: number;
    status: "PENDING" | "PROCESSING" | "COMPLETED" | "FAILED" | "CANCELLED";
    progress: number;
    stage: string | null;
    processing_stages: Record<string, {
        status: string;
        progress?: number;
        started_at?: string;
        finished_at?: string;
        error?: string;
    }> | null;
    error_message: string | null;
    created_at: string;
    updated_at: string;
    video?: Record<string, any> | null | undefined;
    video_metadata?: Record<string, any> | null | undefined;
};
/**
 * The first frame of every session.
 */
export type Welcome = {
    type: "welcome";
    session_id: string;
    user_id: string;
    node_id: string;
    protocol: number;
    heartbeat_ms: number;
    limits: {
        max_frame_bytes: number;
        rate_per_sec: number;
        rate_burst: number;
        outbound_queue_bytes: number;
        recovery_limit: number;
    };
};
/**
 * Any frame the server sends. Fields by `type` are listed in docs/PROTOCOL.md#server-frames.
 */
export type ServerFrame = {
    type: string;
    id?: string;
    [field: string]: any;
};
/**
 * Any frame a client sends (docs/PROTOCOL.md#client-frames).
 */
export type ClientFrame = {
    type: string;
    id?: string;
    [field: string]: any;
};
/**
 * A send waiting in the outbox until its message is stored and seen.
 */
export type OutboxEntry = {
    /**
     * The idempotency key sent with every attempt.
     */
    client_msg_id: string;
    chat_id: string;
    content: string;
    /**
     * Milliseconds since the epoch.
     */
    created_at: number;
    /**
     * Set once a server acknowledged it.
     */
    message_id?: string | undefined;
    /**
     * Set once a server acknowledged it.
     */
    seq?: number | undefined;
};
/**
 * Where the outbox lives between runs: `memoryStorage()` (the default) or
 * `localStorageOutbox(key)` in browsers, or anything with these two methods.
 */
export type OutboxStorage = {
    load: () => OutboxEntry[];
    save: (entries: OutboxEntry[]) => void;
};
/**
 * The part of a WebSocket this library uses: the browser's, Node 22's global one, or the `ws`
 * package's.
 */
export type WebSocketLike = {
    readyState: number;
    send: (data: string) => void;
    close: (code?: number, reason?: string) => void;
    addEventListener: (type: string, listener: (event: any) => void) => void;
};
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;
export type ConnectOptions = {
    /**
     * The server's base URL (`https://echo.example.com`), or its
     * WebSocket URL (`wss://echo.example.com/ws`); several for failover: each (re)connection
     * tries the next one after a failure.
     */
    url: string | string[];
    /**
     *   Returns a valid access token (JWT). Called before every connection and, before the current
     *   token expires, to refresh the live session (`refresh_token`). Returning the same token or
     *   nothing means "no newer token yet".
     */
    getToken: () => (string | null | undefined | Promise<string | null | undefined>);
    /**
     * Defaults to `globalThis.WebSocket` (browsers,
     * Node >= 22). On Node 20 pass the `ws` package's `WebSocket`, or run Node with
     * `--experimental-websocket`.
     */
    WebSocket?: WebSocketConstructor | undefined;
    /**
     * For the REST helpers; defaults to `globalThis.fetch`.
     */
    fetch?: typeof fetch | undefined;
    /**
     * Where unsent messages are kept; `memoryStorage()` by default.
     */
    outbox?: OutboxStorage | undefined;
    /**
     * First reconnect delay (1000); it doubles per attempt.
     */
    baseDelayMs?: number | undefined;
    /**
     * Longest reconnect delay (15000).
     */
    maxDelayMs?: number | undefined;
    /**
     * How long a request waits for its reply (10000).
     */
    requestTimeoutMs?: number | undefined;
    /**
     * Refresh this long before the token's `exp` (60000; at
     * most a quarter of the token's remaining life).
     */
    refreshMarginMs?: number | undefined;
    /**
     * Recent messages kept per room to settle sends (500).
     */
    messageCacheSize?: number | undefined;
};
export type ConnectionState = "connecting" | "online" | "reconnecting" | "offline" | "expired" | "stopped";
export type StateEvent = {
    state: ConnectionState;
    /**
     * Failed attempts since the last session.
     */
    attempt: number;
    /**
     * While `reconnecting`: the wait before the next attempt.
     */
    retryInMs?: number | undefined;
    /**
     * While `reconnecting`: when it happens (epoch ms).
     */
    retryAt?: number | undefined;
    /**
     * Why the last connection ended, for people.
     */
    reason?: string | undefined;
    /**
     * The typed error of that ending, when there is one.
     */
    error?: EchoError | undefined;
};
export type SubscribedEvent = {
    /**
     * The `seq` the room is up to date with.
     */
    lastSeq: number;
    /**
     * `false` when the server could not replay everything after
     * `sinceSeq`: the messages in `missed` must be read over REST (`room.fetchMissed()`).
     */
    recovered: boolean;
    /**
     * The gap not replayed.
     */
    missed: {
        afterSeq: number;
        throughSeq: number;
    } | null;
    /**
     * What the subscription asked to resume after.
     */
    sinceSeq: number | null;
    /**
     * Users with a session in the room.
     */
    online: string[];
    /**
     * Whether this was a re-subscription after a reconnect.
     */
    resumed: boolean;
};
export type ClientEvents = {
    state: StateEvent;
    open: {
        welcome: Welcome;
        reconnect: boolean;
    };
    close: {
        code: number;
        reason: string;
        welcomed: boolean;
        error: EchoError;
    };
    frame: ServerFrame;
    job: Job;
    member_added: {
        chat_id: string;
        user_id: string;
    };
    member_removed: {
        chat_id: string;
        user_id: string;
    };
    chat_updated: Chat;
    chat_deleted: {
        chat_id: string;
    };
    token_refreshed: {
        token: string;
    };
    outbox: {
        entries: OutboxEntry[];
    };
    sent: {
        entry: OutboxEntry;
        message: Message;
    };
    send_failed: {
        entry: OutboxEntry;
        error: EchoError;
    };
    error: EchoError;
};
export type RoomEvents = {
    subscribed: SubscribedEvent;
    message: Message;
    presence: {
        user_id: string;
        state: "join" | "leave";
    };
    typing: {
        user_id: string;
    };
    generation: Reply;
    chat_updated: Chat;
    chat_deleted: {};
    member_added: {
        user_id: string;
    };
    member_removed: {
        user_id: string;
    };
    unsubscribed: {
        removed: boolean;
    };
    error: EchoError;
};
export type ReplyResult = {
    /**
     * The stored reply (null only if it could not be found).
     */
    message: Message | null;
    /**
     * `stop`, `length`, `cancelled`, or null when the reply
     * ended while this client was disconnected.
     */
    finishReason: string | null;
    usage: {
        prompt_tokens: number;
        completion_tokens: number;
        total_tokens: number;
    } | null;
};
export type RestOptions = {
    /**
     * The server's base URL (`https://echo.example.com`).
     */
    baseUrl: string | (() => string);
    getToken: () => (string | null | undefined | Promise<string | null | undefined>);
    fetch?: typeof fetch | undefined;
    /**
     * Called on every 401.
     */
    onUnauthorized?: ((error: ApiError) => void) | undefined;
};
