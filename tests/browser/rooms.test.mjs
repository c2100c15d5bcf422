// Unit tests of the client's pure logic (crates/gateway/web/rooms.js): room ids, and the
// per-room log that decides what to resume from and what is a duplicate.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import {
  RoomLog,
  backoffDelay,
  dmMembers,
  dmPeer,
  dmRoom,
  isValidRoom,
  isValidUser,
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
    for (let s = 51; s <= 100; s++) log.add(msg(s));
    assert.equal(log.since, 100);
    for (let s = 1; s <= 50; s++) log.add(msg(s));
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
