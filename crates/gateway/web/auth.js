// Accounts: the gateway's HTTP auth API, the access token (in memory only) and its
// silent refresh through the HttpOnly `chat_refresh` cookie, single-flight across tabs.
//
// No DOM here: `refreshDelay` and `errorText` are unit-tested under node
// (tests/browser/rooms.test.mjs).

/** An HTTP API call the server refused (`{"error":{"code","message"}}`) or that failed. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterSecs = null) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.retryAfterSecs = retryAfterSecs;
  }
}

/** Refresh this long before the access token expires at the latest... */
const REFRESH_MARGIN_MS = 60_000;
/** ...and never sooner than this after getting it (a clock or server oddity must not spin). */
const REFRESH_MIN_DELAY_MS = 5_000;

/**
 * When to refresh a token that is valid for `lifetimeMs` more: at 80 % of its life, but
 * at least `REFRESH_MARGIN_MS` before it expires, and not sooner than 5 s from now.
 */
export function refreshDelay(lifetimeMs) {
  if (!Number.isFinite(lifetimeMs) || lifetimeMs <= 0) return REFRESH_MIN_DELAY_MS;
  const delay = Math.min(lifetimeMs * 0.8, lifetimeMs - REFRESH_MARGIN_MS);
  return Math.max(REFRESH_MIN_DELAY_MS, Math.round(delay));
}

/** A sentence for the user about a refused call. */
export function errorText(err) {
  if (!(err instanceof ApiError)) return 'Something went wrong. Try again.';
  switch (err.code) {
    case 'network':
      return 'Cannot reach the server. Check your connection and try again.';
    case 'invalid_credentials':
      return 'Wrong username or password.';
    case 'rate_limited':
      return err.retryAfterSecs
        ? `Too many attempts. Try again in ${err.retryAfterSecs} s.`
        : 'Too many attempts. Try again in a moment.';
    case 'username_taken':
      return 'That username is taken. Pick another one.';
    default:
      return err.message || err.code || `The server answered ${err.status}.`;
  }
}

/**
 * Calls the gateway's HTTP API (same origin). `token` is sent as a Bearer token; `body`
 * as JSON. Resolves with the parsed JSON (null for an empty body), rejects with an
 * `ApiError` (`status` 0 and `code` 'network' when the server cannot be reached).
 */
export async function api(method, path, { body, token, signal } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      signal,
    });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'Cannot reach the server.');
  }
  const text = await response.text().catch(() => '');
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep null
  }
  if (!response.ok) {
    const retry = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
    throw new ApiError(
      response.status,
      json?.error?.code ?? `http_${response.status}`,
      json?.error?.message ?? `The server answered ${response.status}.`,
      Number.isFinite(retry) ? retry : null,
    );
  }
  return json;
}

/**
 * What this server offers: `{accounts, dev, external_tokens}`. A gateway without the
 * endpoint (older, or accounts not configured) answers 404: it takes names in dev mode
 * and pasted tokens otherwise, as before accounts existed.
 */
export async function authMethods() {
  try {
    const methods = await api('GET', '/v1/auth/methods');
    return {
      accounts: methods?.accounts === true,
      dev: methods?.dev === true,
      external_tokens: methods?.external_tokens === true,
      known: true,
    };
  } catch {
    return { accounts: false, dev: true, external_tokens: true, known: false };
  }
}

const LOCK_NAME = 'chat.v1.refresh';
const CHANNEL_NAME = 'chat.v1.auth';

/**
 * The signed-in account of this tab. Events: `token` (a new access token; `detail` is
 * `{user, token}`), `ended` (`detail.message`: the session is over, e.g. another tab
 * logged out or the refresh cookie was refused).
 *
 * The refresh token is an HttpOnly cookie, shared by every tab of the browser and
 * rotated on each use, so refreshes are serialised across tabs with a Web Lock: inside
 * it a tab first checks whether another tab's refresh (announced on a BroadcastChannel)
 * already gave it a fresh token, and only otherwise uses the cookie.
 */
export class AccountSession extends EventTarget {
  /** `{id, username, display_name}` */
  user = null;
  token = null;
  /** ms since the epoch */
  expiresAt = 0;
  #timer = null;
  #inflight = null;
  #channel = null;

  constructor() {
    super();
    if (typeof BroadcastChannel === 'function') {
      this.#channel = new BroadcastChannel(CHANNEL_NAME);
      this.#channel.onmessage = (e) => this.#onBroadcast(e.data);
      // Node (the unit tests) would otherwise stay alive for the channel; browsers lack it.
      this.#channel.unref?.();
    }
  }

  get active() {
    return this.token !== null;
  }

  /** Adopts a `{user, access_token, expires_in}` reply (sign-up, log-in, refresh). */
  adopt(reply, { announce = true } = {}) {
    if (!reply || typeof reply.access_token !== 'string' || !reply.user?.id) {
      throw new ApiError(0, 'bad_reply', 'The server sent an unexpected answer.');
    }
    const lifetimeMs = Math.max(0, Number(reply.expires_in) || 0) * 1000;
    this.user = reply.user;
    this.token = reply.access_token;
    this.expiresAt = Date.now() + lifetimeMs;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#refreshInBackground(), refreshDelay(lifetimeMs));
    if (announce) this.#channel?.postMessage({ type: 'token', reply: { ...reply, expires_in: lifetimeMs / 1000 } });
    this.dispatchEvent(new CustomEvent('token', { detail: { user: this.user, token: this.token } }));
  }

  /** Forgets the token here and, when `broadcast`, in the other tabs too. */
  clear({ broadcast = false } = {}) {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.user = null;
    this.token = null;
    this.expiresAt = 0;
    if (broadcast) this.#channel?.postMessage({ type: 'signout' });
  }

  /**
   * Gets a new access token with the refresh cookie; one at a time per tab and across
   * tabs. Resolves true when this tab holds a fresh token, false when the cookie was
   * refused (no session); rejects with an `ApiError` when the server cannot be reached.
   */
  refresh() {
    if (!this.#inflight) {
      this.#inflight = this.#refreshLocked().finally(() => {
        this.#inflight = null;
      });
    }
    return this.#inflight;
  }

  async #refreshLocked() {
    const startedWith = this.token;
    const run = async () => {
      // Another tab refreshed while we waited for the lock: its token is ours too.
      if (this.token && this.token !== startedWith && this.expiresAt - Date.now() > REFRESH_MARGIN_MS) {
        return true;
      }
      try {
        this.adopt(await api('POST', '/v1/auth/refresh'));
        return true;
      } catch (err) {
        if (err.status === 401 || err.status === 400) return false;
        throw err;
      }
    };
    if (globalThis.navigator?.locks?.request) {
      return navigator.locks.request(LOCK_NAME, run);
    }
    return run();
  }

  async #refreshInBackground() {
    let ok;
    try {
      ok = await this.refresh();
    } catch {
      // Offline: try again soon; the socket keeps its token until it expires.
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => this.#refreshInBackground(), 10_000);
      return;
    }
    if (!ok && this.token) {
      this.clear();
      this.dispatchEvent(new CustomEvent('ended', { detail: { message: 'Your session has ended. Please log in again.' } }));
    }
  }

  #onBroadcast(data) {
    if (data?.type === 'token' && data.reply) {
      // Only follow a tab of the same account; a tab that signed in as someone else
      // replaced the shared cookie, so this tab's session is over.
      if (this.user && data.reply.user?.id !== this.user.id) {
        this.clear();
        this.dispatchEvent(new CustomEvent('ended', { detail: { message: 'You signed in as someone else in another tab.' } }));
        return;
      }
      if (this.user) this.adopt(data.reply, { announce: false });
    } else if (data?.type === 'signout' && this.token) {
      this.clear();
      this.dispatchEvent(new CustomEvent('ended', { detail: { message: 'You logged out in another tab.' } }));
    }
  }
}
