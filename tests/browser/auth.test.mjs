// Unit tests of the client's account logic (crates/gateway/web/auth.js, users.js) under
// node, with `fetch` replaced by a recording fake.

import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { AccountSession, ApiError, api, authMethods, errorText, refreshDelay } from '../../crates/gateway/web/auth.js';
import { USERS_PER_REQUEST, UserDirectory, batches } from '../../crates/gateway/web/users.js';

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

/** Replaces `fetch`: `answer(url, init)` returns `{status, body, headers}`; calls are recorded. */
function fakeFetch(answer) {
  const calls = [];
  globalThis.fetch = async (url, init = {}) => {
    calls.push({ url: String(url), init });
    const { status = 200, body = null, headers = {} } = await answer(String(url), init);
    return new Response(body === null ? null : JSON.stringify(body), { status, headers });
  };
  return calls;
}

const reply = (id, token = `t-${id}`, expires_in = 600) => ({
  user: { id, username: id, display_name: id.toUpperCase() },
  access_token: token,
  token_type: 'Bearer',
  expires_in,
});

describe('refreshDelay', () => {
  it('refreshes at 80 % of a token\'s life, at least a minute before it expires', () => {
    assert.equal(refreshDelay(600_000), 480_000);
    assert.equal(refreshDelay(120_000), 60_000);
  });
  it('never sooner than 5 s, whatever the server says', () => {
    assert.equal(refreshDelay(30_000), 5_000);
    assert.equal(refreshDelay(0), 5_000);
    assert.equal(refreshDelay(Number.NaN), 5_000);
  });
});

describe('api', () => {
  it('sends JSON and a Bearer token, and parses the answer', async () => {
    const calls = fakeFetch(() => ({ status: 200, body: { ok: 1 } }));
    assert.deepEqual(await api('POST', '/v1/x', { body: { a: 1 }, token: 'tok' }), { ok: 1 });
    assert.equal(calls[0].init.method, 'POST');
    assert.equal(calls[0].init.headers.Authorization, 'Bearer tok');
    assert.equal(calls[0].init.headers['Content-Type'], 'application/json');
    assert.equal(calls[0].init.body, '{"a":1}');
  });
  it('a 204 resolves with null', async () => {
    fakeFetch(() => ({ status: 204 }));
    assert.equal(await api('POST', '/v1/auth/logout', { token: 't' }), null);
  });
  it('an error carries the server\'s code, message and Retry-After', async () => {
    fakeFetch(() => ({
      status: 429,
      body: { error: { code: 'rate_limited', message: 'slow down' } },
      headers: { 'Retry-After': '17' },
    }));
    const err = await api('POST', '/v1/auth/login', { body: {} }).catch((e) => e);
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 429);
    assert.equal(err.code, 'rate_limited');
    assert.equal(err.retryAfterSecs, 17);
    assert.equal(errorText(err), 'Too many attempts. Try again in 17 s.');
  });
  it('an unreachable server is a network error', async () => {
    globalThis.fetch = async () => {
      throw new TypeError('fetch failed');
    };
    const err = await api('GET', '/v1/x').catch((e) => e);
    assert.equal(err.code, 'network');
    assert.match(errorText(err), /Cannot reach/);
  });
  it('the server\'s own message is shown for other refusals (a weak password says why)', () => {
    const err = new ApiError(400, 'weak_password', 'use at least 10 characters');
    assert.equal(errorText(err), 'use at least 10 characters');
    assert.equal(errorText(new ApiError(401, 'invalid_credentials', 'x')), 'Wrong username or password.');
  });
});

describe('authMethods', () => {
  it('reads the server\'s answer', async () => {
    fakeFetch(() => ({ body: { accounts: true, dev: false, external_tokens: false } }));
    assert.deepEqual(await authMethods(), { accounts: true, dev: false, external_tokens: false, known: true });
  });
  it('a server without the endpoint gets the pre-accounts choices', async () => {
    fakeFetch(() => ({ status: 404, body: { error: { code: 'not_found', message: 'no' } } }));
    assert.deepEqual(await authMethods(), { accounts: false, dev: true, external_tokens: true, known: false });
  });
});

describe('AccountSession', () => {
  it('concurrent refreshes make one request and share its token', async () => {
    let release;
    const gate = new Promise((r) => {
      release = r;
    });
    const calls = fakeFetch(async () => {
      await gate;
      return { body: reply('u_1', 'fresh') };
    });
    const session = new AccountSession();
    const tokens = [];
    session.addEventListener('token', (e) => tokens.push(e.detail.token));
    const both = Promise.all([session.refresh(), session.refresh()]);
    release();
    assert.deepEqual(await both, [true, true]);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].url, '/v1/auth/refresh');
    assert.equal(calls[0].init.method, 'POST');
    assert.equal(session.token, 'fresh');
    assert.equal(session.user.id, 'u_1');
    assert.deepEqual(tokens, ['fresh']);
    session.clear();
  });
  it('a refused cookie resolves false; an unreachable server rejects', async () => {
    fakeFetch(() => ({ status: 401, body: { error: { code: 'invalid_token', message: 'no' } } }));
    const session = new AccountSession();
    assert.equal(await session.refresh(), false);
    assert.equal(session.token, null);
    globalThis.fetch = async () => {
      throw new TypeError('down');
    };
    await assert.rejects(session.refresh(), (e) => e.code === 'network');
  });
  it('adopt keeps the token in memory and refuses a malformed reply', () => {
    const session = new AccountSession();
    assert.throws(() => session.adopt({ user: { id: 'u' } }), ApiError);
    session.adopt(reply('u_2', 'abc', 600));
    assert.equal(session.token, 'abc');
    assert.ok(session.expiresAt > Date.now() + 590_000);
    session.clear();
    assert.equal(session.token, null);
    assert.equal(session.active, false);
  });
});

describe('UserDirectory', () => {
  it('batches splits at the server\'s limit', () => {
    const ids = Array.from({ length: 1001 }, (_, i) => `u${i}`);
    assert.deepEqual(batches(ids).map((b) => b.length), [USERS_PER_REQUEST, USERS_PER_REQUEST, 1]);
    assert.deepEqual(batches([]), []);
  });
  it('resolves wanted ids in one request per batch, caches them, and falls back to the id', async () => {
    const calls = fakeFetch((url) => {
      const ids = new URL(url, 'http://x').searchParams.get('ids').split(',');
      return { body: { users: ids.filter((id) => id !== 'gone').map((id) => ({ id, username: id, display_name: `Name ${id}` })) } };
    });
    const dir = new UserDirectory(() => 'tok');
    const changed = new Promise((r) => dir.addEventListener('change', r, { once: true }));
    assert.equal(dir.name('a'), 'a');
    dir.want(['a', 'b', 'gone']);
    dir.want(['a', 'b']);
    await changed;
    assert.equal(calls.length, 1);
    assert.equal(calls[0].init.headers.Authorization, 'Bearer tok');
    assert.equal(dir.name('a'), 'Name a');
    assert.equal(dir.name('gone'), 'gone');
    // Cached, and an id the server does not know is not asked again.
    dir.want(['a', 'b', 'gone']);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(calls.length, 1);
  });
  it('without a token nothing is asked and names stay ids', async () => {
    const calls = fakeFetch(() => ({ body: { users: [] } }));
    const dir = new UserDirectory(() => null);
    dir.want(['a']);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(calls.length, 0);
    assert.equal(dir.name('a'), 'a');
  });
  it('remember updates a name (a rename) and says so', () => {
    const dir = new UserDirectory(() => null);
    let changes = 0;
    dir.addEventListener('change', () => {
      changes += 1;
    });
    dir.remember([{ id: 'u', username: 'u', display_name: 'Old' }]);
    dir.remember([{ id: 'u', username: 'u', display_name: 'Old' }]);
    dir.remember([{ id: 'u', username: 'u', display_name: 'New' }]);
    assert.equal(changes, 2);
    assert.equal(dir.name('u'), 'New');
  });
});
