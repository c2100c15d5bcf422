// Room ids, the per-room message log and its unread count: pure logic, no DOM, no
// network (unit-tested with node in tests/browser/rooms.test.mjs).

const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const ROOM_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/** Whether `s` is a valid user id (protocol: 1-64 of `[A-Za-z0-9_.-]`). */
export function isValidUser(s) {
  return USER_ID.test(s);
}

/** Whether `s` is a room a user may type in: valid charset, and `dm:` rooms well formed. */
export function isValidRoom(s) {
  if (!ROOM_ID.test(s)) return false;
  return !s.startsWith('dm:') || dmMembers(s) !== null;
}

/** The direct room of two distinct users: `dm:<a>:<b>` with `a < b` byte-wise. */
export function dmRoom(me, other) {
  if (!isValidUser(me) || !isValidUser(other) || me === other) return null;
  // User ids are ASCII, so comparing UTF-16 code units is comparing bytes.
  return me < other ? `dm:${me}:${other}` : `dm:${other}:${me}`;
}

/** The two members of a well-formed `dm:` room, or null. */
export function dmMembers(room) {
  const parts = room.split(':');
  if (parts.length !== 3 || parts[0] !== 'dm') return null;
  const [, a, b] = parts;
  return isValidUser(a) && isValidUser(b) && a < b ? [a, b] : null;
}

/** The other member of a `dm:` room `me` belongs to, or null. */
export function dmPeer(room, me) {
  const members = dmMembers(room);
  if (!members || !members.includes(me)) return null;
  return members[0] === me ? members[1] : members[0];
}

/** Length of `s` in UTF-8 bytes (the protocol's body limit is in bytes). */
export function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

/** The most messages one `history` request may ask for (protocol: `limit` 1-200). */
export const HISTORY_MAX_LIMIT = 200;

/**
 * The messages of one room this client knows, keyed by `seq`, and the point to resume
 * from after a reconnect.
 *
 * `tip` is the highest seq up to which nothing is missing since the room was first
 * joined: the server's `last_seq` at that join, advanced over every seq that follows it
 * contiguously. Rejoining with `since = tip` replays everything after it, so no gap can
 * survive a reconnect; seqs already known are dropped, so nothing shows twice.
 *
 * Downwards the log is contiguous too: from its oldest message up to `tip` nothing is
 * missing, because scroll-back pages from the oldest message (`history before = oldest`)
 * and a hole below it would never be filled. So a message below the known range (an
 * old message's resend acked again with `duplicate: true`, say) is not kept; scrolling
 * back reaches it in order. Above `tip` a few messages may wait for a gap below them to
 * be filled (`gap()`).
 */
export class RoomLog {
  constructor(id) {
    this.id = id;
    /** @type {Map<number, object>} seq -> message */
    this.messages = new Map();
    /** Resume point; null until the room's first `joined` (nothing is kept until then). */
    this.tip = null;
    /** Whether older messages may exist before the oldest known one. */
    this.hasMore = true;
    /**
     * Set when a message came with a seq this log holds under another `id`: the server's
     * store was replaced, so every seq here may name a different message. The caller
     * resets the room.
     */
    this.replaced = false;
    this.sortedCache = null;
  }

  /**
   * Adds a message; false when it is not kept: its seq is already known (a duplicate,
   * or a conflict that sets `replaced`), the room was never joined, or it lies below the
   * known range, where it would leave a hole.
   */
  add(msg) {
    if (!Number.isSafeInteger(msg.seq) || msg.seq < 1) return false;
    const known = this.messages.get(msg.seq);
    if (known) {
      if (typeof msg.id === 'string' && typeof known.id === 'string' && msg.id !== known.id) {
        this.replaced = true;
      }
      return false;
    }
    if (this.tip === null || msg.seq < this.floor()) return false;
    this.messages.set(msg.seq, msg);
    this.sortedCache = null;
    this.advance();
    return true;
  }

  /**
   * Adds a `history` page (oldest first), newest first so that each message extends the
   * known range downwards. Returns how many were new.
   */
  addPage(messages) {
    let added = 0;
    for (const msg of [...messages].sort((a, b) => b.seq - a.seq)) {
      if (this.add(msg)) added += 1;
    }
    return added;
  }

  /** The lowest seq `add` keeps: one below the oldest known (or below `tip + 1`). */
  floor() {
    const oldest = this.oldest();
    return (oldest === undefined ? this.tip + 1 : Math.min(oldest, this.tip + 1)) - 1;
  }

  /**
   * Records a `joined` reply. Returns 'fresh' for the first join (the caller loads
   * the latest page), 'resumed' after a rejoin with `since`, and 'reset' when the server
   * knows fewer messages than this log: the log is cleared and the caller reloads it
   * like a fresh join. (A gateway answers at least `since`, so a replaced store is
   * usually noticed by `replaced` instead.)
   */
  joined(lastSeq) {
    if (this.tip === null) {
      this.tip = lastSeq;
      this.advance();
      return 'fresh';
    }
    if (lastSeq < this.tip) {
      this.reset();
      this.tip = lastSeq;
      return 'reset';
    }
    // The catch-up (everything after `since`) arrived before `joined`.
    this.tip = Math.max(this.tip, lastSeq);
    this.advance();
    return 'resumed';
  }

  /** Forgets everything, as before the first join. */
  reset() {
    this.messages.clear();
    this.sortedCache = null;
    this.tip = null;
    this.hasMore = true;
    this.replaced = false;
  }

  /** The `since` to rejoin with, or undefined before the first join. */
  get since() {
    return this.tip === null ? undefined : this.tip;
  }

  advance() {
    if (this.tip === null) return;
    while (this.messages.has(this.tip + 1)) this.tip += 1;
  }

  /**
   * The `history` request that fetches (the top of) the hole between `tip` and the
   * lowest known message above it, `{before, limit}`; null when there is none. A hole
   * of more than 200 takes several requests, each from the lowest message known.
   */
  gap() {
    if (this.tip === null) return null;
    let above = Infinity;
    for (const seq of this.messages.keys()) if (seq > this.tip && seq < above) above = seq;
    if (above === Infinity) return null;
    return { before: above, limit: Math.min(HISTORY_MAX_LIMIT, above - this.tip - 1) };
  }

  /** Known messages, oldest first. */
  sorted() {
    if (!this.sortedCache) {
      this.sortedCache = [...this.messages.values()].sort((a, b) => a.seq - b.seq);
    }
    return this.sortedCache;
  }

  /** Lowest known seq, or undefined. */
  oldest() {
    const all = this.sorted();
    return all.length ? all[0].seq : undefined;
  }

  /** Highest known seq, or 0. */
  newest() {
    const all = this.sorted();
    return all.length ? all[all.length - 1].seq : 0;
  }

  /** The highest seq this log knows the room has: `tip` or a message above it; 0 before the first join. */
  top() {
    return Math.max(this.tip ?? 0, this.newest());
  }
}

/**
 * The read point to keep after a `joined` with `lastSeq`. The read point is the highest
 * seq the user has seen in the room (saved across reloads). A room without one (never
 * read in this browser: just added, or its store was replaced) starts read up to its end,
 * so it does not light up with its whole history; one past the room's end (a store that
 * knows fewer messages) comes down to the end.
 */
export function readPointAfterJoin(lastRead, lastSeq) {
  if (!Number.isSafeInteger(lastSeq) || lastSeq < 0) return lastRead ?? null;
  if (!Number.isSafeInteger(lastRead) || lastRead < 0) return lastSeq;
  return Math.min(lastRead, lastSeq);
}

/**
 * Unread messages of a room: the seqs after the read point `lastRead` up to `log.top()`,
 * less the messages of `me` among them that the log holds. A seq not loaded counts (its
 * author is unknown: after a long absence only the latest page is loaded). Never
 * negative; 0 before the first join or without a read point.
 */
export function unreadCount(log, lastRead, me) {
  if (log.tip === null || !Number.isSafeInteger(lastRead)) return 0;
  const top = log.top();
  const span = top - lastRead;
  if (span <= 0) return 0;
  let own = 0;
  if (span <= log.messages.size) {
    for (let seq = lastRead + 1; seq <= top; seq++) if (log.messages.get(seq)?.from === me) own += 1;
  } else {
    for (const m of log.messages.values()) if (m.seq > lastRead && m.from === me) own += 1;
  }
  return Math.max(0, span - own);
}

/**
 * Reconnect delay before attempt `attempt` (0-based): exponential from `base` ms up to
 * `cap` ms, with "equal jitter" (half fixed, half random) so that many clients dropped
 * at once by a restarting gateway do not come back in lockstep.
 */
export function backoffDelay(attempt, random = Math.random, base = 500, cap = 15000) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** A session that stayed up this long was a good one: the next drop starts the backoff over. */
export const STABLE_SESSION_MS = 10_000;
/** The least wait after the server closed us for flooding (1008) or falling behind (1013). */
export const THROTTLED_MIN_WAIT_MS = 10_000;

/**
 * The wait before reconnecting after a socket closed. `attempt` counts the tries since
 * the last stable session; `upMs` is how long the session lasted after `hello` (null when
 * there was none); `code` is the close code. Returns `{delay, attempt, throttled}` with
 * the next `attempt`.
 *
 * The backoff starts over only after a session that lasted `STABLE_SESSION_MS`, so a
 * server that greets and then drops us at once is not hammered. 1008 (policy: flooding)
 * and 1013 (try again later: too slow) wait at least `THROTTLED_MIN_WAIT_MS`. 1001 (a
 * draining gateway, after a normal session) is the fast path: the backoff starts over.
 */
export function planReconnect({ attempt, upMs, code }, random = Math.random) {
  const stable = upMs !== null && upMs !== undefined && upMs >= STABLE_SESSION_MS;
  const start = stable ? 0 : attempt;
  const throttled = code === 1008 || code === 1013;
  let delay = backoffDelay(start, random);
  if (throttled) delay = Math.max(delay, THROTTLED_MIN_WAIT_MS);
  return { delay, attempt: start + 1, throttled };
}
