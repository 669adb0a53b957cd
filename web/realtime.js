// One WebSocket per tab (PROTOCOL.md): requests with ids, server events, heartbeats, and
// reconnection with jittered exponential backoff. Resubscribing is the app's job (on `open`).

/** First reconnect delay; each attempt doubles it, up to `MAX_DELAY_MS`. */
const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 15000;
/** How long a request waits for its reply before it is failed (and the socket suspected). */
const REQUEST_TIMEOUT_MS = 10000;
/** Close code the client uses when it gives up on a silent socket. */
const CLOSE_STALE = 4000;
/** The server closes with this when the token expired without `refresh_token`. */
const CLOSE_TOKEN_EXPIRED = 4001;

/** Why a request failed: an `error` frame (`code`, `message`) or the connection dropping. */
export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * The realtime connection. Events:
 * - `state` `{state, attempt, retryInMs, reason}` — `connecting`, `online`, `reconnecting`,
 *   `offline` (waiting for the network), `expired` (token expired), `stopped`;
 * - `open` `{welcome, reconnect}` after `welcome`, before anything else is sent;
 * - `frame` with each server frame that is not a reply to a request.
 */
export class Realtime extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.ws = null;
    this.state = 'stopped';
    this.attempt = 0;
    this.connectedOnce = false;
    this.timer = null;
    this.heartbeat = null;
    this.pending = new Map();
    this.nextId = 1;
    this.heartbeatMs = 25000;
    this.welcome = null;
    /** Why the last connection ended, shown while reconnecting. */
    this.reason = '';
    this.onOnline = () => {
      if (this.state === 'offline' || this.state === 'reconnecting') this.schedule(Math.random() * 300);
    };
  }

  /** Opens the connection (and keeps it open until `stop`). */
  start() {
    if (this.state !== 'stopped' && this.state !== 'expired') return;
    // A socket that dies while the network is gone is caught by the heartbeat; reconnecting
    // waits for the network to come back.
    window.addEventListener('online', this.onOnline);
    this.attempt = 0;
    this.connect();
  }

  /** Closes for good (sign-out). */
  stop() {
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.timer);
    clearTimeout(this.welcomeTimer);
    clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'signed out');
    this.failPending('disconnected', 'signed out');
    this.setState('stopped');
  }

  /** Skips the backoff wait. */
  retryNow() {
    if (this.state === 'reconnecting' || this.state === 'offline') {
      clearTimeout(this.timer);
      this.connect();
    }
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, attempt: this.attempt, ...extra } }));
  }

  connect() {
    clearTimeout(this.timer);
    if (!navigator.onLine) {
      this.setState('offline', { reason: this.reason });
      return;
    }
    const token = this.token();
    if (!token) return;
    this.setState(this.connectedOnce ? 'reconnecting' : 'connecting', { retryInMs: 0, reason: 'connecting' });
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`, ['echo.v1']);
    this.ws = ws;
    let welcomed = false;
    clearTimeout(this.welcomeTimer);
    this.welcomeTimer = setTimeout(() => {
      if (this.ws === ws && !welcomed) ws.close(CLOSE_STALE, 'no welcome');
    }, REQUEST_TIMEOUT_MS);
    ws.addEventListener('message', (e) => {
      if (this.ws !== ws) return;
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      this.lastHeard = Date.now();
      if (!welcomed) {
        if (frame.type !== 'welcome') return;
        welcomed = true;
        clearTimeout(this.welcomeTimer);
        this.onWelcome(frame);
        return;
      }
      this.onFrame(frame);
    });
    ws.addEventListener('close', (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.heartbeat);
      clearTimeout(this.welcomeTimer);
      this.failPending('disconnected', 'the connection dropped');
      if (e.code === CLOSE_TOKEN_EXPIRED) {
        this.setState('expired', { reason: 'token expired' });
        return;
      }
      this.attempt += 1;
      this.dispatchEvent(new CustomEvent('dropped', { detail: { code: e.code, welcomed } }));
      this.schedule(this.backoff(), closeReason(e));
    });
  }

  /** Equal jitter: half the exponential step, plus a random share of the other half. */
  backoff() {
    const step = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.max(0, this.attempt - 1));
    return step / 2 + Math.random() * (step / 2);
  }

  schedule(delayMs, reason = this.reason) {
    clearTimeout(this.timer);
    this.reason = reason;
    if (this.state === 'stopped' || this.state === 'expired') return;
    if (!navigator.onLine) {
      this.setState('offline', { reason });
      return;
    }
    this.setState('reconnecting', { retryInMs: delayMs, retryAt: Date.now() + delayMs, reason });
    this.timer = setTimeout(() => this.connect(), delayMs);
  }

  onWelcome(welcome) {
    const reconnect = this.connectedOnce;
    this.connectedOnce = true;
    this.attempt = 0;
    this.reason = '';
    this.welcome = welcome;
    this.heartbeatMs = welcome.heartbeat_ms || 25000;
    this.setState('online');
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => this.checkAlive(), this.heartbeatMs);
    this.dispatchEvent(new CustomEvent('open', { detail: { welcome, reconnect } }));
  }

  /** An application-level ping: a socket that stopped delivering is closed and reopened. */
  checkAlive() {
    if (this.state !== 'online') return;
    this.request({ type: 'ping' }).catch((e) => {
      if (e.code === 'timeout' && this.ws) this.ws.close(CLOSE_STALE, 'no pong');
    });
  }

  onFrame(frame) {
    if (frame.id && this.pending.has(frame.id)) {
      const p = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(p.timer);
      if (frame.type === 'error') p.reject(new RequestError(frame.code, frame.message));
      else p.resolve(frame);
      return;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
  }

  /** Sends a request and resolves with its reply (rejects with a `RequestError`). */
  request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== 'online') {
        reject(new RequestError('disconnected', 'not connected'));
        return;
      }
      const id = `r${this.nextId++}`;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestError('timeout', 'no reply from the server'));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Sends a frame that has no reply (`typing`); dropped when offline. */
  notify(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === 'online') {
      this.ws.send(JSON.stringify(frame));
    }
  }

  failPending(code, message) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new RequestError(code, message));
    }
    this.pending.clear();
  }
}

function closeReason(e) {
  switch (e.code) {
    case 1001: return 'the server restarted';
    case 1006: return 'the connection was lost';
    case 1009: return 'a message was too large';
    case 4000: return 'the connection went silent';
    case 4008: return 'the connection could not keep up';
    case 4029: return 'too many messages were sent';
    default: return e.reason || `closed (${e.code})`;
  }
}
