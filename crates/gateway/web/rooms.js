// Room ids and the per-room message log: pure logic, no DOM, no network (unit-tested
// with node in tests/browser/rooms.test.mjs).

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

/**
 * The messages of one room this client knows, keyed by `seq`, and the point to resume
 * from after a reconnect.
 *
 * `tip` is the highest seq up to which nothing is missing since the room was first
 * joined: the server's `last_seq` at that join, advanced over every seq that follows it
 * contiguously. Rejoining with `since = tip` replays everything after it, so no gap can
 * survive a reconnect; seqs already known are dropped, so nothing shows twice.
 */
export class RoomLog {
  constructor(id) {
    this.id = id;
    /** @type {Map<number, object>} seq -> message */
    this.messages = new Map();
    /** Resume point; null until the room's first `joined`. */
    this.tip = null;
    /** Whether older messages may exist before the oldest known one. */
    this.hasMore = true;
    this.sortedCache = null;
  }

  /** Adds a message; false when its seq is already known (a duplicate). */
  add(msg) {
    if (!Number.isSafeInteger(msg.seq) || msg.seq < 1 || this.messages.has(msg.seq)) {
      return false;
    }
    this.messages.set(msg.seq, msg);
    this.sortedCache = null;
    this.advance();
    return true;
  }

  /**
   * Records a `joined` reply. Returns 'fresh' for the first join (the caller loads
   * the latest page), 'resumed' after a rejoin with `since`, and 'reset' when the server
   * knows fewer messages than this log (its store was replaced): the log is cleared and
   * the caller reloads it like a fresh join.
   */
  joined(lastSeq) {
    if (this.tip === null) {
      this.tip = lastSeq;
      this.advance();
      return 'fresh';
    }
    if (lastSeq < this.tip) {
      this.messages.clear();
      this.sortedCache = null;
      this.tip = lastSeq;
      this.hasMore = true;
      return 'reset';
    }
    // The catch-up (everything after `since`) arrived before `joined`.
    this.tip = Math.max(this.tip, lastSeq);
    this.advance();
    return 'resumed';
  }

  /** The `since` to rejoin with, or undefined before the first join. */
  get since() {
    return this.tip === null ? undefined : this.tip;
  }

  advance() {
    if (this.tip === null) return;
    while (this.messages.has(this.tip + 1)) this.tip += 1;
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
