// Shared by the browser tests: the real `chat` binary as a child process, headless
// Chromium, and page helpers that drive the web client like a user.
//
// Environment: CHAT_BIN (default target/debug/chat), CHROMIUM_BIN (default
// /usr/bin/chromium). Screenshots and the servers' logs go to tests-artifacts/browser/.

import assert from 'node:assert/strict';
import { it } from 'node:test';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CHAT_BIN = path.resolve(ROOT, process.env.CHAT_BIN ?? 'target/debug/chat');
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
export const ARTIFACTS = path.join(ROOT, 'tests-artifacts', 'browser');
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** Upper bound for any single wait in the browser. */
export const WAIT_MS = 15_000;
/** Upper bound for the pages to notice a restarted server (backoff grows to ~8 s). */
export const RECOVER_MS = 30_000;
export const STEP = { timeout: 60_000 };

// ------------------------------------------------------------------ the chat process

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

/** The real `chat` binary on a fixed port and data directory, restartable. */
export class ChatProcess {
  constructor(port, dataDir, logFile, env = { CHAT_AUTH_MODE: 'dev' }) {
    this.port = port;
    this.dataDir = dataDir;
    this.logFile = logFile;
    this.env = env;
    this.child = null;
    this.base = `http://127.0.0.1:${port}`;
  }

  async start() {
    const log = fs.openSync(this.logFile, 'a');
    this.child = spawn(CHAT_BIN, [], {
      env: {
        ...process.env,
        CHAT_HTTP_ADDR: `127.0.0.1:${this.port}`,
        CHAT_DATA_DIR: this.dataDir,
        CHAT_HTTP_WORKERS: '2',
        CHAT_SHUTDOWN_GRACE_SECS: '5',
        RUST_LOG: process.env.RUST_LOG ?? 'info',
        ...this.env,
      },
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    const child = this.child;
    child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    await eventually('chat /readyz', 30_000, async () => {
      if (child.exitCode !== null) throw new Error(`chat exited with ${child.exitCode}; see ${this.logFile}`);
      const res = await fetch(`${this.base}/readyz`);
      return res.ok;
    });
  }

  /** SIGTERM (graceful drain), then SIGKILL if it takes too long. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    let timer;
    const done = await Promise.race([
      child.exited,
      new Promise((resolve) => {
        timer = setTimeout(resolve, 15_000, null);
      }),
    ]);
    clearTimeout(timer);
    if (!done) {
      child.kill('SIGKILL');
      await child.exited;
    }
    this.child = null;
  }

  killNow() {
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
  }

  /** A crash: SIGKILL, no drain, no goodbye to the clients. */
  async crash() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await child.exited;
    this.child = null;
  }

  /** The server's own record of a room, oldest first. */
  async messages(room, asUser) {
    return this.#read(room, `user=${asUser}`, {});
  }

  async messagesWithToken(room, token) {
    return this.#read(room, '', { Authorization: `Bearer ${token}` });
  }

  async #read(room, query, headers) {
    const url = `${this.base}/v1/rooms/${encodeURIComponent(room)}/messages?limit=200&${query}`;
    const res = await fetch(url, { headers });
    assert.equal(res.status, 200, `history of ${room}`);
    const page = await res.json();
    assert.equal(page.has_more, false, 'test rooms fit in one page');
    return page.messages;
  }
}

/** Starts a `chat` process on a free port and a fresh data directory. */
export async function startChat(name, env) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chat-browser-'));
  const chat = new ChatProcess(await freePort(), dataDir, path.join(ARTIFACTS, `${name}.log`), env);
  // Whatever happens, never leave the server behind.
  process.once('exit', () => chat.killNow());
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      chat.killNow();
      process.exit(130);
    });
  }
  await chat.start();
  return chat;
}

export async function stopChat(chat) {
  if (!chat) return;
  await chat.stop().catch(() => chat.killNow());
  fs.rmSync(chat.dataDir, { recursive: true, force: true });
}

export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM_BIN, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** An HS256 JWT, as a login service would issue it, valid for `ttlSecs`. */
export function jwt(sub, secret, ttlSecs = 3600) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + ttlSecs })}`;
  const signature = crypto.createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** The checks every browser suite starts with; also makes the artifacts directory. */
export function checkPrerequisites() {
  assert.ok(fs.existsSync(CHAT_BIN), `chat binary not found at ${CHAT_BIN}; run cargo build -p chat`);
  assert.ok(fs.existsSync(CHROMIUM_BIN), `Chromium not found at ${CHROMIUM_BIN}`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
}

/**
 * Steps that build on each other in one browser: once a step fails, the rest are
 * skipped and every page is screenshotted (`<prefix>failure-<page>.png`). Pages opened
 * through it record their script errors and CSP violations in `pageErrors`.
 */
export class Journey {
  constructor(prefix = '') {
    this.prefix = prefix;
    /** Set after launching: the Chromium every page opens in. */
    this.browser = null;
    this.pages = {};
    this.pageErrors = [];
    this.broken = false;
    /** When set, every step is skipped with this reason (nothing to test). */
    this.skipAll = null;
  }

  step(name, fn) {
    it(name, STEP, async (t) => {
      if (this.skipAll) {
        t.skip(this.skipAll);
        return;
      }
      if (this.broken) {
        t.skip('an earlier step failed');
        return;
      }
      try {
        await fn(t);
      } catch (err) {
        this.broken = true;
        for (const [who, page] of Object.entries(this.pages)) {
          await screenshot(page, `${this.prefix}failure-${who}`).catch(() => {});
        }
        throw err;
      }
    });
  }

  /** A page in a new browser context (a new device), watched as `name`. */
  async newPage(name, options) {
    const context = await this.browser.newContext(options);
    context.setDefaultTimeout(WAIT_MS);
    return this.watch(name, await context.newPage());
  }

  /** Records `page`'s script errors and CSP violations, and makes it `pages[name]`. */
  watch(name, page) {
    page.on('pageerror', (err) => this.pageErrors.push(`${name}: ${err.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
        this.pageErrors.push(`${name}: ${message.text()}`);
      }
    });
    this.pages[name] = page;
    return page;
  }
}

// ------------------------------------------------------------------ page helpers

export async function screenshot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

export async function signIn(page, base, name) {
  await page.goto(base);
  await page.locator('#signin-name').fill(name);
  await page.locator('#signin-form button[type=submit]').click();
  await waitOnline(page);
}

export async function waitOnline(page, ms = WAIT_MS) {
  await page.locator('#conn-status[data-state="open"]').waitFor({ timeout: ms });
}

/** Opens the sidebar on a phone-sized page (a no-op on a wide one). */
export async function withSidebar(page) {
  if (await page.locator('#drawer-toggle').isVisible()) {
    if ((await page.locator('#drawer-toggle').getAttribute('aria-expanded')) !== 'true') {
      await page.locator('#drawer-toggle').click();
    }
    await page.locator('#sidebar').waitFor({ state: 'visible' });
  }
}

export async function openRoom(page, room) {
  if ((await page.locator('#messages').getAttribute('data-room')) === room) return;
  await withSidebar(page);
  await page.locator(`.room-button[data-room="${room}"]`).click();
  await page.locator(`#messages[data-room="${room}"]`).waitFor({ state: 'attached' });
}

export async function joinRoom(page, room) {
  await withSidebar(page);
  await page.locator('#join-room').fill(room);
  await page.locator('#join-form button[type=submit]').click();
  await page.locator(`#messages[data-room="${room}"]`).waitFor({ state: 'attached' });
}

export async function startDm(page, other) {
  await withSidebar(page);
  await page.locator('#dm-user').fill(other);
  await page.locator('#dm-form button[type=submit]').click();
}

export async function send(page, text) {
  const input = page.locator('#composer-input');
  await input.fill(text);
  await input.press('Enter');
}

/** Stores `bodies` in `room` as `user`, from a second socket in `page` (not its own). */
export async function sendAs(page, user, room, bodies) {
  const acked = await page.evaluate(
    async ({ user, room, bodies }) => {
      const url = new URL(`/v1/ws?user=${user}`, location.href);
      url.protocol = 'ws:';
      const ws = new WebSocket(url);
      let acked = 0;
      await new Promise((resolve, reject) => {
        ws.onerror = () => reject(new Error(`${user}'s socket failed`));
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          if (f.type === 'hello') {
            bodies.forEach((body, i) => {
              ws.send(JSON.stringify({ type: 'send', room, body, client_id: `${user}-${Date.now()}-${i}` }));
            });
          } else if (f.type === 'ack' && ++acked === bodies.length) {
            resolve();
          } else if (f.type === 'error') {
            reject(new Error(`${user}: ${f.code} ${f.message}`));
          }
        };
      });
      ws.close();
      return acked;
    },
    { user, room, bodies },
  );
  assert.equal(acked, bodies.length);
}

/** The messages the page shows for its active room, in DOM order. */
export function shown(page) {
  return page.locator('#messages li.msg').evaluateAll((nodes) =>
    nodes.map((n) => ({ seq: Number(n.dataset.seq), body: n.querySelector('.body').textContent })),
  );
}

export async function waitForBodies(page, room, bodies) {
  await openRoom(page, room);
  await page.waitForFunction(
    (wanted) => {
      const have = new Set([...document.querySelectorAll('#messages li.msg .body')].map((n) => n.textContent));
      return wanted.every((b) => have.has(b));
    },
    bodies,
    { timeout: WAIT_MS },
  );
}

/** The page shows exactly the server's messages of `room`: each once, in seq order, no gaps. */
export async function assertShowsExactly(page, room, truth) {
  await openRoom(page, room);
  // Let any in-flight catch-up or history page land before comparing.
  await page.waitForFunction(
    (n) => document.querySelectorAll('#messages li.msg').length >= n && !document.querySelector('#pending li'),
    truth.length,
    { timeout: WAIT_MS },
  );
  const seen = await shown(page);
  const expected = truth.map((m) => ({ seq: m.seq, body: m.body }));
  assert.deepEqual(seen, expected, `${room} as shown`);
  assert.deepEqual(
    seen.map((m) => m.seq),
    expected.map((_, i) => i + 1),
    `${room}: seqs 1..${expected.length}, no gaps or duplicates`,
  );
}
