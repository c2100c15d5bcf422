// Unit tests of the client's pure logic (crates/gateway/web/rooms.js): room ids, and the
// per-room log that decides what to resume from and what is a duplicate.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  RoomLog,
  STABLE_SESSION_MS,
  THROTTLED_MIN_WAIT_MS,
  backoffDelay,
  dmMembers,
  dmPeer,
  dmRoom,
  isValidRoom,
  isValidUser,
  planReconnect,
  readPointAfterJoin,
  unreadCount,
  utf8Length,
} from '../../crates/gateway/web/rooms.js';

const msg = (seq, body = `m${seq}`) => ({ room: 'r', seq, id: `id${seq}`, from: 'a', body, ts: '2026-01-01T00:00:00.000Z' });

describe('ids', () => {
  it('dm rooms put the two ids in byte order', () => {
    assert.equal(dmRoom('bob', 'alice'), 'dm:alice:bob');
    assert.equal(dmRoom('alice', 'bob'), 'dm:alice:bob');
    // Byte order: uppercase sorts before lowercase, digits before letters.
    assert.equal(dmRoom('bob', 'Zed'), 'dm:Zed:bob');
    assert.equal(dmRoom('a1', 'a.b'), 'dm:a.b:a1');
    assert.equal(dmRoom('alice', 'alice'), null);
    assert.equal(dmRoom('alice', 'not valid'), null);
    assert.equal(dmRoom('alice', ''), null);
  });

  it('dm members and peers', () => {
    assert.deepEqual(dmMembers('dm:alice:bob'), ['alice', 'bob']);
    assert.equal(dmMembers('dm:bob:alice'), null);
    assert.equal(dmMembers('general'), null);
    assert.equal(dmPeer('dm:alice:bob', 'alice'), 'bob');
    assert.equal(dmPeer('dm:alice:bob', 'bob'), 'alice');
    assert.equal(dmPeer('dm:alice:bob', 'carol'), null);
  });

  it('validates ids like the server', () => {
    assert.ok(isValidUser('a.b-c_9'));
    assert.ok(!isValidUser('a b'));
    assert.ok(!isValidUser('x'.repeat(65)));
    assert.ok(isValidRoom('general'));
    assert.ok(isValidRoom('team:ops.eu-1'));
    assert.ok(isValidRoom('dm:alice:bob'));
    assert.ok(!isValidRoom('dm:bob:alice'));
    assert.ok(!isValidRoom('dm:alice'));
    assert.ok(!isValidRoom('has space'));
    assert.ok(!isValidRoom(''));
    assert.ok(!isValidRoom('r'.repeat(129)));
  });

  it('measures bodies in UTF-8 bytes', () => {
    assert.equal(utf8Length('abc'), 3);
    assert.equal(utf8Length('é'), 2);
    assert.equal(utf8Length('👋'), 4);
  });
});

describe('RoomLog', () => {
  it('first join starts the resume point at the server head', () => {
    const log = new RoomLog('r');
    assert.equal(log.since, undefined);
    assert.equal(log.joined(7), 'fresh');
    assert.equal(log.since, 7);
    log.add(msg(8));
    log.add(msg(9));
    assert.equal(log.since, 9);
  });

  it('drops duplicates and keeps seq order whatever the arrival order', () => {
    const log = new RoomLog('r');
    log.joined(0);
    assert.ok(log.add(msg(2)));
    assert.ok(log.add(msg(1)));
    assert.ok(!log.add(msg(2, 'again')));
    assert.ok(!log.add({ ...msg(0) }));
    assert.deepEqual(log.sorted().map((m) => m.seq), [1, 2]);
    assert.equal(log.sorted()[1].body, 'm2');
    assert.equal(log.oldest(), 1);
    assert.equal(log.newest(), 2);
  });

  it('never resumes past a gap', () => {
    const log = new RoomLog('r');
    log.joined(3);
    log.add(msg(4));
    log.add(msg(6)); // e.g. our own ack before the message in between
    assert.equal(log.since, 4, 'a rejoin must replay 5');
    log.add(msg(5));
    assert.equal(log.since, 6);
  });

  it('history pages below the head do not move the resume point back', () => {
    const log = new RoomLog('r');
    log.joined(100);
    log.addPage(Array.from({ length: 50 }, (_, i) => msg(51 + i)));
    assert.equal(log.since, 100);
    log.addPage(Array.from({ length: 50 }, (_, i) => msg(1 + i)));
    assert.equal(log.since, 100);
    assert.equal(log.sorted().length, 100);
  });

  it('a rejoin after the catch-up moves to the server head', () => {
    const log = new RoomLog('r');
    log.joined(2);
    log.add(msg(3));
    log.add(msg(4)); // the catch-up, before `joined`
    assert.equal(log.joined(4), 'resumed');
    assert.equal(log.since, 4);
  });

  it('keeps nothing before the first join', () => {
    const log = new RoomLog('r');
    assert.ok(!log.add(msg(5)));
    assert.equal(log.oldest(), undefined);
  });

  it('an old seq acked again after a reload does not punch a hole in scroll-back', () => {
    // After a reload the outbox survives but the resume point does not: a message
    // stored as seq 5 whose ack was lost is resent, and its `duplicate: true` ack names
    // seq 5 while the room is at 200 and the log holds 151-200.
    const log = new RoomLog('r');
    assert.equal(log.joined(200), 'fresh');
    assert.equal(log.addPage(Array.from({ length: 50 }, (_, i) => msg(151 + i))), 50);
    assert.ok(!log.add({ ...msg(5), from: 'me' }), 'below the loaded range: not kept');
    assert.equal(log.oldest(), 151, 'scroll-back still asks before=151');
    // Scroll-back then pages down to it in order.
    assert.equal(log.addPage(Array.from({ length: 50 }, (_, i) => msg(101 + i))), 50);
    assert.equal(log.oldest(), 101);
    assert.equal(log.since, 200);
  });

  it('the same ack before the first page loads is not kept either', () => {
    const log = new RoomLog('r');
    log.joined(200);
    assert.ok(!log.add(msg(5)));
    assert.ok(log.add(msg(200)), 'the head itself extends the range');
    assert.ok(log.add(msg(201)));
    assert.ok(log.add(msg(199)));
    assert.ok(!log.add(msg(150)));
    assert.deepEqual(log.sorted().map((m) => m.seq), [199, 200, 201]);
  });

  it('a history page joins the range from its newest message down', () => {
    const log = new RoomLog('r');
    log.joined(120);
    // The latest page, oldest first as the server sends it.
    assert.equal(log.addPage(Array.from({ length: 50 }, (_, i) => msg(71 + i))), 50);
    assert.equal(log.oldest(), 71);
    assert.equal(log.newest(), 120);
  });

  it('names the hole above the resume point and fetches it from the top', () => {
    const log = new RoomLog('r');
    assert.equal(log.gap(), null);
    log.joined(10);
    log.add(msg(11));
    assert.equal(log.gap(), null);
    log.add(msg(15));
    assert.deepEqual(log.gap(), { before: 15, limit: 3 });
    log.addPage([msg(12), msg(13), msg(14)]);
    assert.equal(log.gap(), null);
    assert.equal(log.since, 15);
  });

  it('a hole of more than 200 is fetched in pages of 200 from its top down', () => {
    const log = new RoomLog('r');
    log.joined(10);
    log.add(msg(511));
    assert.deepEqual(log.gap(), { before: 511, limit: 200 });
    log.addPage(Array.from({ length: 200 }, (_, i) => msg(311 + i)));
    assert.deepEqual(log.gap(), { before: 311, limit: 200 });
    log.addPage(Array.from({ length: 200 }, (_, i) => msg(111 + i)));
    assert.deepEqual(log.gap(), { before: 111, limit: 100 });
    log.addPage(Array.from({ length: 100 }, (_, i) => msg(11 + i)));
    assert.equal(log.gap(), null);
    assert.equal(log.since, 511);
    assert.equal(log.sorted().length, 501);
  });

  it('the same seq under another id means the store was replaced', () => {
    const log = new RoomLog('r');
    log.joined(0);
    log.add(msg(1));
    log.add(msg(2));
    assert.ok(!log.add(msg(2)), 'a true duplicate');
    assert.equal(log.replaced, false);
    assert.ok(!log.add({ ...msg(2), id: 'another-store' }));
    assert.equal(log.replaced, true);
    log.reset();
    assert.equal(log.replaced, false);
    assert.equal(log.since, undefined);
    assert.equal(log.sorted().length, 0);
    assert.equal(log.joined(1), 'fresh');
  });

  it('a server that knows less than we do resets the log', () => {
    const log = new RoomLog('r');
    log.joined(0);
    log.add(msg(1));
    log.add(msg(2));
    log.hasMore = false;
    assert.equal(log.joined(0), 'reset');
    assert.equal(log.sorted().length, 0);
    assert.equal(log.since, 0);
    assert.equal(log.hasMore, true);
  });
});

describe('unread', () => {
  const from = (seq, user) => ({ ...msg(seq), from: user });

  it('a room never read here starts read up to its end; a read point past the end comes down', () => {
    assert.equal(readPointAfterJoin(null, 40), 40);
    assert.equal(readPointAfterJoin(undefined, 0), 0);
    assert.equal(readPointAfterJoin('7', 40), 40, 'garbage from storage counts as none');
    assert.equal(readPointAfterJoin(-1, 40), 40);
    assert.equal(readPointAfterJoin(25, 40), 25, 'kept: 15 arrived while the page was closed');
    assert.equal(readPointAfterJoin(40, 40), 40);
    assert.equal(readPointAfterJoin(90, 40), 40, 'the store knows fewer messages');
  });

  it('counts what arrived after the read point, not our own messages', () => {
    const log = new RoomLog('r');
    log.joined(5);
    log.addPage([from(3, 'a'), from(4, 'me'), from(5, 'b')]);
    assert.equal(unreadCount(log, 2, 'me'), 2, 'seqs 3 and 5; 4 is ours');
    assert.equal(unreadCount(log, 4, 'me'), 1);
    assert.equal(unreadCount(log, 5, 'me'), 0);
    log.add(from(6, 'me'));
    log.add(from(7, 'b'));
    assert.equal(unreadCount(log, 5, 'me'), 1);
  });

  it('seqs not loaded count: their author is unknown', () => {
    const log = new RoomLog('r');
    log.joined(300); // after a long absence only the latest page loads
    log.addPage(Array.from({ length: 50 }, (_, i) => from(251 + i, i % 2 ? 'me' : 'b')));
    assert.equal(unreadCount(log, 200, 'me'), 50 + 25);
    // Before the page loads, everything after the read point counts.
    const bare = new RoomLog('r');
    bare.joined(300);
    assert.equal(unreadCount(bare, 200, 'me'), 100);
  });

  it('counts messages above a hole, and the hole', () => {
    const log = new RoomLog('r');
    log.joined(10);
    log.add(from(13, 'b'));
    assert.equal(log.top(), 13);
    assert.equal(unreadCount(log, 10, 'me'), 3);
  });

  it('is never negative, and 0 before the first join or without a read point', () => {
    const log = new RoomLog('r');
    assert.equal(unreadCount(log, 3, 'me'), 0, 'not joined');
    log.joined(5);
    assert.equal(unreadCount(log, null, 'me'), 0);
    assert.equal(unreadCount(log, 9, 'me'), 0, 'read point past the end');
    log.addPage([from(4, 'me'), from(5, 'me')]);
    assert.equal(unreadCount(log, 3, 'me'), 0);
  });
});

describe('backoff', () => {
  it('grows exponentially to the cap with jitter in the upper half', () => {
    const low = () => 0;
    const high = () => 0.999999;
    assert.equal(backoffDelay(0, low), 250);
    assert.equal(backoffDelay(0, high), 500);
    assert.equal(backoffDelay(3, low), 2000);
    assert.equal(backoffDelay(3, high), 4000);
    assert.equal(backoffDelay(50, low), 7500);
    assert.equal(backoffDelay(50, high), 15000);
  });
});

describe('reconnect plan', () => {
  const mid = () => 0.5;

  it('backs off further when the server greets and drops at once', () => {
    // A server that says hello and closes right away must not get a reconnect every
    // 250-500 ms: a short session does not reset the backoff.
    let attempt = 0;
    const delays = [];
    for (let i = 0; i < 6; i++) {
      const plan = planReconnect({ attempt, upMs: 50, code: 1006 }, mid);
      attempt = plan.attempt;
      delays.push(plan.delay);
    }
    assert.deepEqual(delays, [375, 750, 1500, 3000, 6000, 11250]);
  });

  it('starts over after a session that stayed up', () => {
    const plan = planReconnect({ attempt: 7, upMs: STABLE_SESSION_MS, code: 1006 }, mid);
    assert.equal(plan.delay, 375);
    assert.equal(plan.attempt, 1);
    // Refused before hello: keeps counting.
    assert.equal(planReconnect({ attempt: 3, upMs: null, code: 1006 }, mid).attempt, 4);
  });

  it('1001 after a session is the fast path', () => {
    const plan = planReconnect({ attempt: 4, upMs: 60_000, code: 1001 }, mid);
    assert.equal(plan.delay, 375);
    assert.equal(plan.throttled, false);
  });

  it('1008 and 1013 wait at least the minimum and keep backing off', () => {
    for (const code of [1008, 1013]) {
      let attempt = 0;
      for (let i = 0; i < 8; i++) {
        const plan = planReconnect({ attempt, upMs: 100, code }, mid);
        assert.equal(plan.throttled, true);
        assert.ok(plan.delay >= THROTTLED_MIN_WAIT_MS, `${code}: waited ${plan.delay}`);
        attempt = plan.attempt;
      }
      assert.equal(attempt, 8);
      // Even after a long session: the server asked us to slow down.
      assert.ok(planReconnect({ attempt: 0, upMs: 3_600_000, code }, mid).delay >= THROTTLED_MIN_WAIT_MS);
    }
  });
});
