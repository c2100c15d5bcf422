// The accounts journey in real headless Chromium against the real `chat` binary in its
// default mode (accounts on, no dev names): sign up, a reload that stays signed in (the
// refresh cookie), a second device, two users chatting under their display names, a
// direct conversation started by searching people, a rename, a password change that
// signs the other device out (close 4003) with a message, and deleting the account.
//
//   scripts/browser-test.sh   (or CHAT_BIN=target/debug/chat node --test tests/browser/accounts.test.mjs)

import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';

import {
  checkPrerequisites,
  Journey,
  launchBrowser,
  openRoom,
  screenshot,
  send,
  startChat,
  stopChat,
  waitForBodies,
  waitOnline,
  withSidebar,
} from './harness.mjs';

const ALICE = { username: 'alice', password: 'correct horse battery staple', display: 'Alice Liddell' };
const BOB = { username: 'bob', password: 'bob has a long passphrase', display: 'Bob Builder' };
const ALICE_NEW_PASSWORD = 'through the looking glass 42';

/** Fills and submits the sign-up or log-in form. */
async function accountForm(page, base, mode, who, password = who.password) {
  if (page.url() !== `${base}/`) await page.goto(base);
  await page.locator(`#mode-opt-${mode}`).click();
  await page.locator('#signin-username').fill(who.username);
  await page.locator('#signin-password').fill(password);
  if (mode === 'signup') await page.locator('#signin-display').fill(who.display);
  await page.locator('#signin-submit').click();
}

async function openAccount(page) {
  await withSidebar(page);
  await page.locator('#account-open').click();
  await page.locator('#account-dialog[open]').waitFor();
}

/** The display names shown as authors of the active room's messages. */
function authors(page) {
  return page.locator('#messages li.theirs .author').evaluateAll((nodes) => nodes.map((n) => n.firstChild.textContent));
}

before(checkPrerequisites);

describe('accounts in Chromium', { timeout: 300_000 }, () => {
  let chat;
  const journey = new Journey('accounts-');
  const { pages, pageErrors } = journey;
  const ids = {};
  const step = (name, fn) => journey.step(name, fn);
  const newDevice = (name, options = { viewport: { width: 1100, height: 760 } }) => journey.newPage(name, options);

  before(async () => {
    // The all-in-one's default: accounts, access tokens, no `?user=`.
    chat = await startChat('chat-accounts', {});
    // A gateway built before the accounts HTTP API answers 404: nothing to test here.
    if ((await fetch(`${chat.base}/v1/auth/methods`)).status === 404) {
      journey.skipAll = 'this chat binary has no /v1/auth API (GET /v1/auth/methods answered 404)';
    }
    journey.browser = await launchBrowser();
  });

  after(async () => {
    await journey.browser?.close().catch(() => {});
    await stopChat(chat);
  });

  step('the server offers accounts and no dev names', async () => {
    const res = await fetch(`${chat.base}/v1/auth/methods`);
    assert.equal(res.status, 200, 'GET /v1/auth/methods');
    const methods = await res.json();
    assert.equal(methods.accounts, true);
    assert.equal(methods.dev, false);
  });

  step('alice signs up and is online under her display name', async () => {
    const alice = await newDevice('alice');
    await alice.goto(chat.base);
    await alice.locator('#signin-username').waitFor();
    assert.equal(await alice.locator('#signin-name').isVisible(), false, 'no name-only form without dev mode');
    assert.equal(await alice.locator('#mode-opt-user').isVisible(), false);
    await screenshot(alice, 'accounts-01-login');
    await accountForm(alice, chat.base, 'signup', ALICE);
    await waitOnline(alice);
    assert.equal(await alice.locator('#me-name').innerText(), ALICE.display);
    // The refresh token is an HttpOnly cookie; the access token is nowhere in storage.
    const cookies = await alice.context().cookies();
    const refresh = cookies.find((c) => c.name === 'chat_refresh');
    assert.ok(refresh, 'a chat_refresh cookie');
    assert.equal(refresh.httpOnly, true);
    assert.equal(refresh.path, '/v1/auth');
    const stored = await alice.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
    assert.doesNotMatch(stored, /eyJ/, 'no token in web storage');
  });

  step('a reload stays signed in (refresh through the cookie)', async () => {
    const { alice } = pages;
    await alice.reload();
    await waitOnline(alice);
    assert.equal(await alice.locator('#me-name').innerText(), ALICE.display);
    assert.equal(await alice.locator('#signin').isVisible(), false);
  });

  step('a wrong password is refused with a clear message', async () => {
    const phone = await newDevice('alicePhone', { viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true, reducedMotion: 'reduce' });
    await accountForm(phone, chat.base, 'login', ALICE, 'not her password');
    await phone.locator('#signin-error', { hasText: 'Wrong username or password' }).waitFor();
    assert.equal(await phone.locator('#chat').isVisible(), false);
  });

  step('alice logs in on a second device', async () => {
    const phone = pages.alicePhone;
    await accountForm(phone, chat.base, 'login', ALICE);
    await waitOnline(phone);
    await withSidebar(phone);
    assert.equal(await phone.locator('#me-name').innerText(), ALICE.display);
  });

  step('bob signs up; they chat in #general and see display names, not ids', async () => {
    const { alice } = pages;
    const bob = await newDevice('bob');
    await accountForm(bob, chat.base, 'signup', BOB);
    await waitOnline(bob);
    await openRoom(alice, 'general');
    await send(alice, 'Hello from Alice');
    await waitForBodies(bob, 'general', ['Hello from Alice']);
    await bob.locator('#messages .author', { hasText: ALICE.display }).first().waitFor();
    await send(bob, 'Hi Alice, Bob here');
    await waitForBodies(alice, 'general', ['Hi Alice, Bob here']);
    await alice.locator('#messages .author', { hasText: BOB.display }).first().waitFor();
    for (const name of await authors(alice)) assert.equal(name, BOB.display);
    // The ids are user ids (`u_…`), the names are what is shown.
    ids.bob = await alice.locator('#messages li.theirs .author').first().getAttribute('data-user');
    assert.match(ids.bob, /^u_[0-9a-f]{32}$/);
    await screenshot(alice, 'accounts-02-names');
  });

  step('bob finds alice by name and starts a direct conversation', async () => {
    const { alice, bob } = pages;
    await bob.locator('#dm-user').fill('alice');
    await bob.locator('#dm-form button[type=submit]').click();
    const hit = bob.locator('#dm-results button.person', { hasText: ALICE.display });
    await hit.waitFor();
    await hit.click();
    await bob.locator('#messages[data-room^="dm:"]').waitFor({ state: 'attached' });
    const room = await bob.locator('#messages').getAttribute('data-room');
    assert.ok(room.includes(ids.bob), `${room} is bob's`);
    assert.equal(await bob.locator('#room-title').innerText(), ALICE.display);
    await send(bob, 'a private word');
    // Alice opens it from her side by searching bob's display name.
    await alice.locator('#dm-user').fill('Bob B');
    await alice.locator('#dm-form button[type=submit]').click();
    await alice.locator('#dm-results button.person', { hasText: BOB.display }).click();
    await waitForBodies(alice, room, ['a private word']);
    await alice.locator(`#dm-list .room-button[data-room="${room}"]`, { hasText: BOB.display }).waitFor();
    ids.dm = room;
    await screenshot(alice, 'accounts-03-dm');
  });

  step('alice renames herself; bob sees the new name', async () => {
    const { alice, bob } = pages;
    await openAccount(alice);
    await alice.locator('#rename-input').fill('Alice L.');
    await alice.locator('#rename-form button[type=submit]').click();
    await alice.locator('#account-status', { hasText: 'saved' }).waitFor();
    await alice.locator('#account-close').click();
    assert.equal(await alice.locator('#me-name').innerText(), 'Alice L.');
    // Names are cached for a page's life: a fresh page asks again.
    await bob.reload();
    await waitOnline(bob);
    await openRoom(bob, 'general');
    await bob.locator('#messages .author', { hasText: 'Alice L.' }).first().waitFor();
    assert.equal(await bob.locator('#messages .author', { hasText: ALICE.display }).count(), 0);
  });

  step('a weak new password is refused with the server\'s reason', async () => {
    const { alice } = pages;
    await openAccount(alice);
    await alice.locator('#password-current').fill(ALICE.password);
    await alice.locator('#password-new').fill('short');
    await alice.locator('#password-form button[type=submit]').click();
    const error = alice.locator('#account-error');
    await error.filter({ hasText: /\S/ }).waitFor();
    assert.doesNotMatch(await error.innerText(), /Something went wrong/);
  });

  step('a password change signs the other device out with a message (4003)', async () => {
    const { alice, alicePhone } = pages;
    await alice.locator('#password-current').fill(ALICE.password);
    await alice.locator('#password-new').fill(ALICE_NEW_PASSWORD);
    await alice.locator('#password-form button[type=submit]').click();
    await alice.locator('#account-status', { hasText: 'Password changed' }).waitFor();
    await alice.locator('#account-close').click();
    // The phone's socket is closed with 4003: back to sign-in, saying why.
    await alicePhone.locator('#signin-notice', { hasText: /signed out/i }).waitFor();
    assert.equal(await alicePhone.locator('#chat').isVisible(), false);
    await screenshot(alicePhone, 'accounts-04-signed-out');
    // This device stays signed in and can still talk.
    await waitOnline(alice);
    await openRoom(alice, 'general');
    await send(alice, 'still here after the change');
    await waitForBodies(pages.bob, 'general', ['still here after the change']);
    // The old password no longer works; the new one does.
    await accountForm(alicePhone, chat.base, 'login', ALICE);
    await alicePhone.locator('#signin-error', { hasText: 'Wrong username or password' }).waitFor();
    await accountForm(alicePhone, chat.base, 'login', ALICE, ALICE_NEW_PASSWORD);
    await waitOnline(alicePhone);
  });

  step('log out everywhere ends the other device too', async () => {
    const { alice, alicePhone } = pages;
    await withSidebar(alicePhone);
    await openAccount(alicePhone);
    await alicePhone.locator('#logout-all').click();
    await alicePhone.locator('#signin-notice', { hasText: 'every device' }).waitFor();
    await alice.locator('#signin-notice', { hasText: /signed out/i }).waitFor();
    // And a reload does not sign back in: the cookie's session is gone.
    await alice.reload();
    await alice.locator('#signin-username').waitFor();
    assert.equal(await alice.locator('#chat').isVisible(), false);
  });

  step('alice deletes her account after confirming with her password', async () => {
    const { alice } = pages;
    await accountForm(alice, chat.base, 'login', ALICE, ALICE_NEW_PASSWORD);
    await waitOnline(alice);
    await openAccount(alice);
    await alice.locator('#delete-password').fill('wrong password');
    await alice.locator('#delete-form button[type=submit]').click();
    await alice.locator('#account-error').filter({ hasText: /\S/ }).waitFor();
    assert.equal(await alice.locator('#account-dialog').isVisible(), true, 'still signed in');
    await alice.locator('#delete-password').fill(ALICE_NEW_PASSWORD);
    await alice.locator('#delete-form button[type=submit]').click();
    await alice.locator('#signin-notice', { hasText: 'deleted' }).waitFor();
    await screenshot(alice, 'accounts-05-deleted');
    await accountForm(alice, chat.base, 'login', ALICE, ALICE_NEW_PASSWORD);
    await alice.locator('#signin-error', { hasText: 'Wrong username or password' }).waitFor();
  });

  step('no script errors or CSP violations on any page', async () => {
    assert.deepEqual(pageErrors, []);
  });
});
