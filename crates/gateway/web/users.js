// Display names: user ids resolved with `GET /v1/users?ids=` in batches, cached for
// the page's life. No DOM; `batches` is unit-tested under node.

import { api } from './auth.js';

/** The server's limit of ids per `GET /v1/users` request. */
export const USERS_PER_REQUEST = 500;
/** Ids asked for within this window go in one request. */
const BATCH_DELAY_MS = 30;

/** Splits `ids` into arrays of at most `size`. */
export function batches(ids, size = USERS_PER_REQUEST) {
  const out = [];
  for (let i = 0; i < ids.length; i += size) out.push(ids.slice(i, i + size));
  return out;
}

/**
 * `name(id)` is the display name when known, else the id itself (dev names, external
 * tokens, or not resolved yet). `want(ids)` queues unknown ids; a `change` event follows
 * when some names arrived. `token` is a function returning the current access token
 * (null: nothing is resolved, names stay ids).
 */
export class UserDirectory extends EventTarget {
  /** id -> {id, username, display_name}; null: asked, unknown to the server */
  #known = new Map();
  #wanted = new Set();
  #timer = null;
  #token;

  constructor(token) {
    super();
    this.#token = token;
  }

  name(id) {
    const user = this.#known.get(id);
    return user?.display_name || user?.username || id;
  }

  get(id) {
    return this.#known.get(id) ?? null;
  }

  /** Records users the server sent (a search, our own profile, a rename). */
  remember(users) {
    let changed = false;
    for (const user of users) {
      if (!user || typeof user.id !== 'string') continue;
      const old = this.#known.get(user.id);
      if (old?.display_name !== user.display_name || old?.username !== user.username) changed = true;
      this.#known.set(user.id, { id: user.id, username: user.username, display_name: user.display_name });
    }
    if (changed) this.dispatchEvent(new Event('change'));
  }

  want(ids) {
    if (!this.#token()) return;
    for (const id of ids) {
      if (typeof id === 'string' && !this.#known.has(id)) this.#wanted.add(id);
    }
    if (this.#wanted.size && !this.#timer) this.#timer = setTimeout(() => this.#resolve(), BATCH_DELAY_MS);
  }

  /** Forgets everything (signed out). */
  clear() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#known.clear();
    this.#wanted.clear();
  }

  async #resolve() {
    this.#timer = null;
    const ids = [...this.#wanted];
    this.#wanted.clear();
    const token = this.#token();
    if (!token || !ids.length) return;
    // Asked: not asked again by every render while the answer is out.
    for (const id of ids) this.#known.set(id, null);
    let changed = false;
    for (const batch of batches(ids)) {
      let reply;
      try {
        reply = await api('GET', `/v1/users?ids=${batch.map(encodeURIComponent).join(',')}`, { token });
      } catch {
        // Try again the next time they are wanted.
        for (const id of batch) if (this.#known.get(id) === null) this.#known.delete(id);
        continue;
      }
      for (const user of reply?.users ?? []) {
        if (typeof user?.id === 'string') {
          this.#known.set(user.id, { id: user.id, username: user.username, display_name: user.display_name });
          changed = true;
        }
      }
    }
    if (changed) this.dispatchEvent(new Event('change'));
  }
}
