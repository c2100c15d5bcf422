// The WebSocket to the gateway (protocol v1): reconnects by itself with backoff and
// jitter, correlates replies with requests through `ref`, and notices dead links.

import { planReconnect } from './rooms.js';

/** A request rejected by the server (`error` frame) or by the link. */
export class RequestError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/** Send a `ping` after this long without any inbound frame... */
const IDLE_PING_MS = 25_000;
/** ...and give up on the socket after this long. */
const DEAD_AFTER_MS = 40_000;
const HEARTBEAT_TICK_MS = 5_000;
/** Close codes of the gateway: the token expired (not renewed in time)... */
export const CLOSE_TOKEN_EXPIRED = 4001;
/** ...and the session was ended (logout, password change, account deleted). */
export const CLOSE_SESSION_ENDED = 4003;

/**
 * Events (all `CustomEvent`s):
 * - `state`: `detail.state` is `connecting`, `open` (after `hello`), `waiting` (a retry
 *   is scheduled, `detail.retryAt`; `detail.code` and `detail.reason` of the close, and
 *   `detail.throttled` when the server shut us out for flooding or falling behind), or
 *   `stopped`.
 * - `hello`: a new session; `detail` is the `hello` frame. Callers rejoin rooms here.
 * - `frame`: every server frame that is not the reply to a pending request.
 * - `refused`: the socket closed before `hello` (bad credentials, gateway down or
 *   draining); callers may check their credentials.
 * - `ended`: the server closed with 4001 (the token expired and was not renewed) or
 *   4003 (the session ended: logged out elsewhere, password changed, account deleted);
 *   `detail` is `{code, reason}`. The connection is stopped: reconnecting with the
 *   same credentials cannot work.
 */
export class Connection extends EventTarget {
  #url;
  #ws = null;
  #state = 'stopped';
  /** Tries since the last session that stayed up `STABLE_SESSION_MS`. */
  #attempt = 0;
  /** When the current session got its `hello`. */
  #openedAt = 0;
  /** A 1008/1013 close: the server asked us to stay away until then; no shortcut. */
  #throttledUntil = 0;
  #retryTimer = null;
  #heartbeat = null;
  #lastInbound = 0;
  #nextRef = 1;
  /** ref -> {resolve, reject, timer} */
  #pending = new Map();

  /** `url` is a function so credentials are read again on every attempt. */
  constructor(url) {
    super();
    this.#url = url;
  }

  get state() {
    return this.#state;
  }

  get isOpen() {
    return this.#state === 'open';
  }

  start() {
    if (this.#state !== 'stopped') return;
    this.#connect();
  }

  stop() {
    this.#setState('stopped');
    clearTimeout(this.#retryTimer);
    clearInterval(this.#heartbeat);
    this.#drop(1000, 'signed out');
  }

  /**
   * Skips the remaining backoff (network came back, user asked), except after the
   * server closed us for flooding or falling behind: that wait is served in full.
   */
  retryNow() {
    if (this.#state !== 'waiting' || Date.now() < this.#throttledUntil) return;
    clearTimeout(this.#retryTimer);
    this.#attempt = 0;
    this.#connect();
  }

  /**
   * Hands the live session a renewed access token (`auth`; the server answers `authed`,
   * passed on as a `frame`). The next reconnect reads the new token from the URL
   * function anyway. False when not connected.
   */
  renew(token) {
    return this.send({ type: 'auth', token });
  }

  /** Sends a frame if the session is open; false otherwise. */
  send(frame) {
    if (!this.isOpen || !this.#ws) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends a frame with a fresh `ref` and resolves with the direct reply, or rejects with
   * a `RequestError` (`error` frame, `timeout`, `disconnected`).
   */
  request(frame, timeoutMs = 15_000) {
    return new Promise((resolve, reject) => {
      const ref = `r${this.#nextRef++}`;
      if (!this.send({ ...frame, ref })) {
        reject(new RequestError('disconnected', 'not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new RequestError('timeout', 'no reply in time'));
      }, timeoutMs);
      this.#pending.set(ref, { resolve, reject, timer });
    });
  }

  #setState(state, extra = {}) {
    this.#state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, ...extra } }));
  }

  #connect() {
    this.#setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.#url());
    } catch (e) {
      console.warn('cannot open WebSocket', e);
      this.#closed(ws, false, 1006, '');
      return;
    }
    this.#ws = ws;
    let greeted = false;
    ws.onmessage = (event) => {
      if (this.#ws !== ws) return;
      this.#lastInbound = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        console.warn('unparsable frame', event.data);
        return;
      }
      if (!greeted && frame.type === 'hello') {
        greeted = true;
        // The backoff is not reset here: a server that greets and closes at once
        // would get a reconnect every half second. `#closed` resets it after a
        // session that lasted.
        this.#openedAt = Date.now();
        this.#setState('open');
        this.#startHeartbeat();
        this.dispatchEvent(new CustomEvent('hello', { detail: frame }));
        return;
      }
      this.#dispatch(frame);
    };
    ws.onclose = (event) => this.#closed(ws, greeted, event.code, event.reason);
    // An `error` event is always followed by `close`; nothing to do here.
    ws.onerror = () => {};
  }

  #dispatch(frame) {
    const waiter = frame.ref !== undefined && this.#pending.get(frame.ref);
    if (waiter) {
      this.#pending.delete(frame.ref);
      clearTimeout(waiter.timer);
      if (frame.type === 'error') waiter.reject(new RequestError(frame.code, frame.message));
      else waiter.resolve(frame);
      return;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
  }

  #closed(ws, greeted, code, reason) {
    if (ws && this.#ws !== ws) return; // an old socket we already replaced
    this.#ws = null;
    clearInterval(this.#heartbeat);
    for (const [ref, waiter] of this.#pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new RequestError('disconnected', 'connection lost'));
      this.#pending.delete(ref);
    }
    if (this.#state === 'stopped') return;
    if (code === CLOSE_TOKEN_EXPIRED || code === CLOSE_SESSION_ENDED) {
      this.#setState('stopped');
      this.dispatchEvent(new CustomEvent('ended', { detail: { code, reason } }));
      return;
    }
    if (!greeted) this.dispatchEvent(new CustomEvent('refused'));
    if (this.#state === 'stopped') return; // a `refused` listener signed out
    const upMs = greeted ? Date.now() - this.#openedAt : null;
    const plan = planReconnect({ attempt: this.#attempt, upMs, code });
    this.#attempt = plan.attempt;
    const retryAt = Date.now() + plan.delay;
    this.#throttledUntil = plan.throttled ? retryAt : 0;
    this.#setState('waiting', { retryAt, code, reason, throttled: plan.throttled });
    const delay = plan.delay;
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  /** Closes the current socket now and forgets it (its close event is ignored). */
  #drop(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  /** The server pings every 20 s, but browsers hide pings; a silent link is dead. */
  #startHeartbeat() {
    clearInterval(this.#heartbeat);
    this.#lastInbound = Date.now();
    this.#heartbeat = setInterval(() => {
      const idle = Date.now() - this.#lastInbound;
      if (idle > DEAD_AFTER_MS) {
        this.#drop(4000, 'no traffic');
        this.#closed(null, true, 4000, 'no traffic');
      } else if (idle > IDLE_PING_MS) {
        this.send({ type: 'ping' });
      }
    }, HEARTBEAT_TICK_MS);
  }
}
