// The web client: sign-in, rooms and conversations, messages, composer.
//
// Server text only ever reaches the page through `textContent` and text nodes (never
// `innerHTML`), so a message body cannot inject markup; the server's CSP is the second
// fence. State lives in `app`; the DOM is re-derived from it (whole lists for rare
// events, single nodes for the common case of a new last message).

import { AccountSession, ApiError, api, authMethods, errorText } from './auth.js';
import { CLOSE_SESSION_ENDED, Connection } from './connection.js';
import {
  RoomLog,
  dmPeer,
  dmRoom,
  isValidRoom,
  isValidUser,
  readPointAfterJoin,
  unreadCount,
  utf8Length,
} from './rooms.js';
import { UserDirectory } from './users.js';

const STORAGE_PREFIX = 'chat.v1.';
const DEFAULT_ROOMS = ['general'];
const PAGE_SIZE = 50;
const MAX_BODY_BYTES = 16 * 1024;
/** Send `typing` at most this often while the user types. */
const TYPING_SEND_INTERVAL_MS = 2000;
/** The gateway relays one `typing` per second per room and connection, drops the rest. */
const TYPING_RELAY_INTERVAL_MS = 1000;
/** Show "x is typing" this long after their last `typing` frame. */
const TYPING_SHOW_MS = 4000;
/** Consecutive messages of one author within this window share one header. */
const GROUP_WINDOW_MS = 5 * 60_000;
/** Retry delay for a send the server could not store yet (`unavailable`). */
const SEND_RETRY_MS = 1500;
/** Load older messages when scrolled this close to the top. */
const LOAD_OLDER_MARGIN_PX = 300;
/** Joining replays everything missed, which may take a while on a big backlog. */
const JOIN_TIMEOUT_MS = 60_000;
/** A hole in a room's log is fetched by at most this many `history` pages in a row. */
const GAP_FILL_MAX_PAGES = 20;

const $ = (id) => document.getElementById(id);

/** Creates an element. `text` sets textContent; children are nodes or plain strings. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const storage = {
  get(key, fallback) {
    try {
      const raw = localStorage.getItem(STORAGE_PREFIX + key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(STORAGE_PREFIX + key, JSON.stringify(value));
    } catch {
      // Storage full or disabled: the client still works, it just forgets on reload.
    }
  },
  remove(key) {
    try {
      localStorage.removeItem(STORAGE_PREFIX + key);
    } catch {
      // as above
    }
  },
};

/** One room or direct conversation the user is in. */
class Room {
  constructor(id) {
    this.id = id;
    this.log = new RoomLog(id);
    /** Messages from others after `lastRead` (`unreadCount`), shown as the badge. */
    this.unread = 0;
    /**
     * The highest seq the user has seen here (at the bottom of the room, the page
     * visible), saved per user in `localStorage` (`read.<user>`); null until known.
     */
    this.lastRead = null;
    /** Whether the current connection has joined it. */
    this.joined = false;
    this.loadingOlder = false;
    /** Whether `fillGap` is fetching missing messages. */
    this.fillingGap = false;
    /** Bumped by a reset: replies to requests made before it are stale. */
    this.epoch = 0;
    /** user -> timer that clears their "typing" */
    this.typing = new Map();
  }

  get peer() {
    return dmPeer(this.id, app.me);
  }

  get label() {
    const peer = this.peer;
    if (!peer) return `#${this.id}`;
    return app.users.get(peer) ? displayName(peer) : `@${peer}`;
  }
}

const app = {
  /**
   * `{mode: 'user', user}` (dev), `{mode: 'token', token}` (pasted), or
   * `{mode: 'account'}` (the token lives in `app.account`, in memory only).
   */
  session: null,
  /** What the server offers (`/v1/auth/methods`), known before the first screen. */
  methods: { accounts: false, dev: true, external_tokens: true, known: false },
  account: new AccountSession(),
  users: null,
  /** @type {Connection|null} */
  conn: null,
  /** The user id the server greeted us as. */
  me: null,
  /** @type {Map<string, Room>} in sidebar order */
  rooms: new Map(),
  active: null,
  /** Messages not yet acknowledged, oldest first: {client_id, room, body, state, error}. */
  outbox: [],
  presence: {
    /** null until the server answers a query; false while it answers `unavailable`. */
    supported: null,
    online: new Map(),
    /** Users queried on this connection. */
    asked: new Set(),
    wanted: new Set(),
    timer: null,
    /** Counts `presence` events; `eventAt`: user -> the count at their latest event. */
    clock: 0,
    eventAt: new Map(),
  },
  /** room -> when we last sent `typing` there */
  typingSentAt: new Map(),
  checkingCredentials: false,
};
app.users = new UserDirectory(() => (app.session?.mode === 'account' ? app.account.token : null));

/** What to call a user: their display name when known, else their id. */
function displayName(id) {
  return app.users.name(id);
}

// ---------------------------------------------------------------- sign-in

/** The sign-in modes this server offers, in display order. */
function signinModes() {
  const m = app.methods;
  const modes = [];
  if (m.accounts) modes.push('login', 'signup');
  if (m.dev) modes.push('user');
  if (m.external_tokens || !m.known) modes.push('token');
  return modes.length ? modes : ['login', 'signup'];
}

/** Shows the sign-in screen; `error` in red, `notice` (why the session ended) above the form. */
function showSignin(error = '', { notice = '' } = {}) {
  $('chat').hidden = true;
  $('signin').hidden = false;
  const modes = signinModes();
  for (const mode of ['login', 'signup', 'user', 'token']) $(`mode-opt-${mode}`).hidden = !modes.includes(mode);
  const last = storage.get('lastMode', null);
  // Dev servers keep the name form first (a returning account user still has `lastMode`).
  const preferred = modes.includes(last) ? last : modes.includes('user') ? 'user' : modes[0];
  setSigninMode(preferred);
  $('signin-error').textContent = error;
  $('signin-notice').textContent = notice;
  $('signin-notice').hidden = !notice;
  focusSigninField();
}

function focusSigninField() {
  const mode = currentSigninMode();
  (mode === 'user' ? $('signin-name') : mode === 'token' ? $('signin-token') : $('signin-username')).focus();
}

function currentSigninMode() {
  return $('signin-form').elements.mode.value;
}

function setSigninMode(mode) {
  $('signin-form').elements.mode.value = mode;
  const account = mode === 'login' || mode === 'signup';
  $('mode-account').hidden = !account;
  $('signup-only').hidden = mode !== 'signup';
  $('mode-user').hidden = mode !== 'user';
  $('mode-token').hidden = mode !== 'token';
  $('signin-password').autocomplete = mode === 'signup' ? 'new-password' : 'current-password';
  $('signin-submit').textContent = mode === 'signup' ? 'Create account' : mode === 'login' ? 'Log in' : 'Sign in';
}

async function onSignin(event) {
  event.preventDefault();
  const mode = currentSigninMode();
  const error = $('signin-error');
  $('signin-notice').hidden = true;
  if (mode === 'login' || mode === 'signup') {
    await onAccountSignin(mode);
    return;
  }
  let session;
  if (mode === 'user') {
    const user = $('signin-name').value.trim();
    if (!isValidUser(user)) {
      error.textContent = 'A name is 1 to 64 letters, digits, or _ . - (no spaces).';
      $('signin-name').focus();
      return;
    }
    session = { mode, user };
  } else {
    const token = $('signin-token').value.trim();
    if (!token) {
      error.textContent = 'Paste your access token.';
      $('signin-token').focus();
      return;
    }
    session = { mode, token };
  }
  const button = $('signin-submit');
  button.disabled = true;
  error.textContent = '';
  const verdict = await checkCredentials(session);
  button.disabled = false;
  if (verdict.ok) {
    storage.set('session', session);
    storage.set('lastMode', mode);
    startChat(session);
  } else if (verdict.status === 401 && mode === 'user') {
    const next = signinModes().includes('token') ? 'token' : signinModes()[0];
    setSigninMode(next);
    error.textContent =
      next === 'token'
        ? `This server does not accept plain names (${verdict.message}). Sign in with an access token.`
        : `This server does not accept plain names (${verdict.message}). Log in or sign up.`;
    focusSigninField();
  } else {
    error.textContent = verdict.message;
  }
}

/** Log in or sign up with a username and password. */
async function onAccountSignin(mode) {
  const error = $('signin-error');
  const username = $('signin-username').value.trim();
  const password = $('signin-password').value;
  if (!username) {
    error.textContent = 'Enter your username.';
    $('signin-username').focus();
    return;
  }
  if (!password) {
    error.textContent = 'Enter your password.';
    $('signin-password').focus();
    return;
  }
  const body = { username, password };
  if (mode === 'signup') {
    const display = $('signin-display').value.trim();
    if (display) body.display_name = display;
  }
  const button = $('signin-submit');
  button.disabled = true;
  error.textContent = '';
  try {
    const reply = await api('POST', mode === 'signup' ? '/v1/auth/signup' : '/v1/auth/login', { body });
    app.account.adopt(reply);
  } catch (err) {
    error.textContent = errorText(err);
    (err.code === 'invalid_credentials' || err.code === 'weak_password' ? $('signin-password') : $('signin-username')).focus();
    return;
  } finally {
    button.disabled = false;
  }
  $('signin-password').value = '';
  $('signin-display').value = '';
  storage.set('lastMode', 'login');
  storage.remove('session');
  startChat({ mode: 'account' });
}

/**
 * Asks the server whether it accepts these credentials. A refused WebSocket upgrade is
 * opaque to scripts (just a close), but the HTTP history endpoint authenticates the same
 * way and its 401 is visible; any other status means the credentials passed.
 */
async function checkCredentials(session) {
  const url = new URL('/v1/rooms/general/messages', location.href);
  url.searchParams.set('limit', '1');
  const headers = {};
  if (session.mode === 'user') url.searchParams.set('user', session.user);
  else headers.Authorization = `Bearer ${sessionToken(session)}`;
  let response;
  try {
    response = await fetch(url, { headers, cache: 'no-store' });
  } catch {
    return { ok: false, status: 0, message: 'Cannot reach the server.' };
  }
  if (response.status !== 401) return { ok: true };
  let message = 'unauthorized';
  try {
    message = (await response.json())?.error?.message || message;
  } catch {
    // not JSON; keep the generic text
  }
  return { ok: false, status: 401, message };
}

function wsUrl(session) {
  const url = new URL('/v1/ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // Browsers cannot set headers on a WebSocket, so the token travels in the query.
  if (session.mode === 'user') url.searchParams.set('user', session.user);
  else url.searchParams.set('token', sessionToken(session));
  return url.href;
}

/** The access token of a token or account session (an account's is renewed in place). */
function sessionToken(session) {
  return session.mode === 'account' ? app.account.token ?? '' : session.token;
}

/**
 * Back to the sign-in screen. `message` is shown as an error; `notice` explains why a
 * session ended. An account session is forgotten here (the caller logs out first).
 */
function signOut(message = '', { notice = '' } = {}) {
  app.conn?.stop();
  app.conn = null;
  storage.remove('session');
  if (app.session?.mode === 'account') app.account.clear();
  app.users.clear();
  closeAccountDialog();
  clearDmResults();
  app.session = null;
  app.me = null;
  for (const room of app.rooms.values()) clearAllTyping(room);
  app.rooms.clear();
  app.active = null;
  app.outbox = [];
  showSignin(message, { notice });
}

// ---------------------------------------------------------------- connection

function startChat(session) {
  app.session = session;
  $('signin').hidden = true;
  $('chat').hidden = false;
  $('me-name').textContent = session.mode === 'user' ? session.user : '…';
  const account = session.mode === 'account';
  $('account-open').hidden = !account;
  // Accounts log out from the account menu (which also ends the server session).
  $('signout').hidden = account;
  setDmMode(account);
  if (account) {
    app.users.remember([app.account.user]);
    // Rooms and read points are per user id: show them at once, like a dev name.
    loadUserState(app.account.user.id);
  } else if (session.mode === 'user') {
    // Show the remembered rooms at once; they are joined when the connection opens.
    loadUserState(session.user);
  }
  const conn = new Connection(() => wsUrl(session));
  app.conn = conn;
  conn.addEventListener('state', (e) => onConnectionState(e.detail.state, e.detail));
  conn.addEventListener('hello', (e) => onHello(e.detail));
  conn.addEventListener('frame', (e) => onFrame(e.detail));
  conn.addEventListener('refused', () => onRefused());
  conn.addEventListener('ended', (e) => onEnded(e.detail));
  conn.start();
}

function onConnectionState(state, detail = {}) {
  const status = $('conn-status');
  status.dataset.state = state;
  $('conn-text').textContent =
    { connecting: 'Connecting…', open: 'Online', waiting: 'Offline, reconnecting…' }[state] ??
    'Signed out';
  $('retry-now').hidden = state !== 'waiting' || detail.throttled === true;
  if (state === 'waiting') showCloseNotice(detail);
  else if (state === 'open' || state === 'stopped') $('conn-notice').hidden = true;
  if (state !== 'open') {
    for (const room of app.rooms.values()) {
      room.joined = false;
      clearAllTyping(room);
    }
    renderTyping();
    // Who is online is unknown while we are not; the next connection asks again.
    app.presence.supported = null;
    document.body.classList.add('no-presence');
    renderHeader();
  }
  renderPending();
}

function onHello(hello) {
  if (app.me !== hello.user) loadUserState(hello.user);
  app.presence.supported = null;
  app.presence.asked.clear();
  for (const room of app.rooms.values()) joinRoom(room);
  flushOutbox();
}

/**
 * Tells the user why the server closed the connection when it was on purpose: flooding
 * (1008) or falling behind (1013) keep the client away for a while, so say so and when
 * it tries again. A plain drop or a draining gateway (1001) needs no words.
 */
function showCloseNotice({ code, reason, throttled, retryAt }) {
  const notice = $('conn-notice');
  if (!throttled) {
    notice.hidden = true;
    return;
  }
  const why =
    code === 1008
      ? 'The server disconnected this page for sending too much'
      : 'The server disconnected this page because it fell behind';
  const seconds = Math.max(1, Math.round((retryAt - Date.now()) / 1000));
  notice.textContent = `${why}${reason ? ` (${reason})` : ''}. Reconnecting in ${seconds} s.`;
  notice.hidden = false;
}

/**
 * The server closed a live socket for good: 4001 (the token expired without being
 * renewed, e.g. the computer slept) or 4003 (the session was ended: a logout elsewhere, a
 * password change, the account deleted). An account tries one refresh after a 4001.
 */
async function onEnded({ code, reason }) {
  const session = app.session;
  if (!session) return;
  if (code !== CLOSE_SESSION_ENDED && session.mode === 'account') {
    let ok = false;
    try {
      ok = await app.account.refresh();
    } catch {
      ok = false;
    }
    if (app.session !== session) return;
    if (ok) {
      app.conn?.start();
      return;
    }
  }
  if (app.session !== session) return;
  const notice =
    code === CLOSE_SESSION_ENDED
      ? `You were signed out: ${reason || 'this session was ended'}. This happens after logging out everywhere, a password change or deleting the account.`
      : `Your session expired${reason ? ` (${reason})` : ''}. Please sign in again.`;
  signOut('', { notice });
}

/** The connection closed before `hello`: if the credentials are refused, sign out. */
async function onRefused() {
  if (app.checkingCredentials || !app.session) return;
  const session = app.session;
  if (session.mode === 'account') {
    await refreshAfterRefusal(session);
    return;
  }
  app.checkingCredentials = true;
  const verdict = await checkCredentials(session);
  app.checkingCredentials = false;
  if (app.session === session && !verdict.ok && verdict.status === 401) {
    signOut(`The server refused your sign-in: ${verdict.message}`);
  }
}

/** An account's socket was refused: its token may have expired. Refresh, or sign out. */
async function refreshAfterRefusal(session) {
  app.checkingCredentials = true;
  try {
    const verdict = await checkCredentials(session);
    if (verdict.ok || verdict.status !== 401) return;
    let ok = false;
    try {
      ok = await app.account.refresh();
    } catch {
      return; // offline: the reconnect loop keeps trying
    }
    if (app.session === session && !ok) {
      signOut('', { notice: 'Your session has ended. Please log in again.' });
    }
  } finally {
    app.checkingCredentials = false;
  }
}

function onFrame(frame) {
  switch (frame.type) {
    case 'message':
      onMessage(frame);
      break;
    case 'typing':
      onTyping(frame);
      break;
    case 'presence':
      onPresenceEvent(frame);
      break;
    case 'authed':
      // The renewed token was accepted (`exp`); nothing to show.
      break;
    case 'error':
      // Errors without a pending request, e.g. `typing` racing a `leave`.
      console.debug('server error', frame.code, frame.message);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- rooms

function loadUserState(user) {
  app.me = user;
  $('me-name').textContent = displayName(user);
  paintAvatar($('me-avatar'), displayName(user));
  for (const room of app.rooms.values()) clearAllTyping(room);
  app.rooms.clear();
  const saved = storage.get(`rooms.${user}`, null);
  const ids = Array.isArray(saved?.rooms) ? saved.rooms : DEFAULT_ROOMS;
  const readPoints = storage.get(`read.${user}`, {}) ?? {};
  for (const id of ids) {
    if (typeof id === 'string' && isValidRoom(id) && (!id.startsWith('dm:') || dmPeer(id, user))) {
      const room = new Room(id);
      if (Number.isSafeInteger(readPoints[id]) && readPoints[id] >= 0) room.lastRead = readPoints[id];
      app.rooms.set(id, room);
    }
  }
  const outbox = storage.get(`outbox.${user}`, []);
  app.outbox = (Array.isArray(outbox) ? outbox : [])
    .filter((m) => m && typeof m.client_id === 'string' && typeof m.body === 'string' && app.rooms.has(m.room))
    .map((m) => ({ ...m, state: m.state === 'failed' ? 'failed' : 'queued' }));
  const active = app.rooms.has(saved?.active) ? saved.active : app.rooms.keys().next().value ?? null;
  selectRoom(active, { focus: true });
}

function saveRooms() {
  if (!app.me) return;
  storage.set(`rooms.${app.me}`, { rooms: [...app.rooms.keys()], active: app.active });
}

/** Saves a room's read point (none: forgets it). Tabs of one user share it; the last write wins. */
function saveReadPoint(room) {
  if (!app.me) return;
  const key = `read.${app.me}`;
  const stored = storage.get(key, {});
  const points = stored && typeof stored === 'object' && !Array.isArray(stored) ? stored : {};
  if (room.lastRead === null) delete points[room.id];
  else points[room.id] = room.lastRead;
  storage.set(key, points);
}

async function joinRoom(room) {
  room.joined = false;
  const since = room.log.since;
  const frame = since === undefined ? { type: 'join', room: room.id } : { type: 'join', room: room.id, since };
  let reply;
  try {
    reply = await app.conn.request(frame, JOIN_TIMEOUT_MS);
  } catch (err) {
    if (app.rooms.get(room.id) !== room) return;
    if (err.code === 'forbidden' || err.code === 'bad_request') {
      removeRoom(room);
      showSidebarError(`Cannot join ${room.label}: ${err.message}`);
    } else if (err.code !== 'disconnected') {
      // unavailable or timed out: try again while this connection lasts.
      setTimeout(() => app.conn?.isOpen && !room.joined && app.rooms.get(room.id) === room && joinRoom(room), 2000);
    }
    return;
  }
  if (app.rooms.get(room.id) !== room) return;
  room.joined = true;
  const outcome = room.log.joined(reply.last_seq);
  if (outcome === 'reset') {
    room.epoch += 1;
    room.loadingOlder = false;
    room.fillingGap = false;
    if (room.id === app.active) renderMessages({ scroll: 'end' });
  }
  // What arrived while the page was closed (or the connection down) is unread.
  const lastRead = readPointAfterJoin(room.lastRead, reply.last_seq);
  if (lastRead !== room.lastRead) {
    room.lastRead = lastRead;
    saveReadPoint(room);
  }
  updateUnread(room);
  // A resumed room whose first page never loaded (that request failed) loads it now.
  if (outcome !== 'resumed' || room.log.messages.size === 0) await loadOlder(room);
  else if (room.id === app.active) maybeLoadOlder();
  askPresenceFor(room);
}

function addRoom(id) {
  let room = app.rooms.get(id);
  if (!room) {
    room = new Room(id);
    app.rooms.set(id, room);
    if (app.conn?.isOpen) joinRoom(room);
  }
  setDrawer(false);
  selectRoom(id, { focus: true });
}

function removeRoom(room) {
  clearAllTyping(room);
  app.rooms.delete(room.id);
  // Joining it again later starts read up to its end.
  room.lastRead = null;
  saveReadPoint(room);
  // Messages still waiting for a room the user left are not sent behind their back.
  const kept = app.outbox.filter((m) => m.room !== room.id);
  if (kept.length !== app.outbox.length) {
    app.outbox = kept;
    saveOutbox();
    renderPending();
  }
  if (app.active === room.id) {
    selectRoom(app.rooms.keys().next().value ?? null);
  } else {
    renderSidebar();
    saveRooms();
  }
}

function leaveRoom(room) {
  if (app.conn?.isOpen) {
    // `not_joined` (left already, or never joined on this connection) is fine.
    app.conn.request({ type: 'leave', room: room.id }).catch(() => {});
  }
  removeRoom(room);
  const next = document.querySelector('.room-button[aria-current="true"]') ?? $('join-room');
  next.focus();
}

function selectRoom(id, { focus = false } = {}) {
  app.active = id && app.rooms.has(id) ? id : null;
  const room = activeRoom();
  saveRooms();
  renderSidebar();
  renderHeader();
  updateTitle();
  renderMessages({ scroll: 'end' });
  renderTyping();
  $('jump').hidden = true;
  $('composer-error').textContent = '';
  const input = $('composer-input');
  input.disabled = !room;
  $('send').disabled = !room;
  input.placeholder = room ? `Message ${room.label}` : 'Join a room first';
  $('composer-input').labels[0].textContent = room ? `Message ${room.label}` : 'Message';
  if (focus && room) input.focus();
  if (room) updateUnread(room); // shown at the bottom: read
  maybeLoadOlder();
}

function activeRoom() {
  return app.active ? app.rooms.get(app.active) ?? null : null;
}

function showSidebarError(text) {
  $('sidebar-error').textContent = text;
}

function onJoinSubmit(event) {
  event.preventDefault();
  const input = $('join-room');
  const id = input.value.trim().replace(/^#/, '');
  showSidebarError('');
  if (id.startsWith('dm:')) {
    showSidebarError('Use “Message a user” for direct conversations.');
    return;
  }
  if (!isValidRoom(id)) {
    showSidebarError('A room name is 1 to 128 letters, digits, or _ . : - (no spaces).');
    input.focus();
    return;
  }
  input.value = '';
  addRoom(id);
}

function onDmSubmit(event) {
  event.preventDefault();
  const input = $('dm-user');
  const other = input.value.trim().replace(/^@/, '');
  showSidebarError('');
  if (app.session?.mode === 'account') {
    if (other) searchPeople(other);
    else input.focus();
    return;
  }
  if (!app.me) {
    showSidebarError('Wait until you are connected.');
    return;
  }
  const id = dmRoom(app.me, other);
  if (!id) {
    showSidebarError(
      other === app.me
        ? 'That is you. Pick someone else.'
        : 'A user id is 1 to 64 letters, digits, or _ . - (no spaces).',
    );
    input.focus();
    return;
  }
  input.value = '';
  addRoom(id);
}

// ---------------------------------------------------------------- messages

function onMessage(msg) {
  const room = app.rooms.get(msg.room);
  if (!room) return;
  // Our own message came back: it is stored, so stop (re)sending it.
  if (msg.from === app.me && typeof msg.client_id === 'string') settleOutbox(msg.client_id);
  if (!addToLog(room, msg)) return;
  clearTyping(room, msg.from);
  if (room.id === app.active) {
    insertMessage(room, msg);
    if (msg.from !== app.me) announce(msg);
  }
  updateUnread(room);
  askPresence([msg.from]);
  // Beyond the resume point: messages before it went missing (the server delivers in
  // order, so they will not come by themselves). Fetch them.
  if (room.joined && msg.seq > room.log.tip) fillGap(room);
}

/** Adds one message to a room's log; a seq conflict (a replaced store) resets the room. */
function addToLog(room, msg) {
  if (room.log.add(msg)) return true;
  if (room.log.replaced) resetRoom(room);
  return false;
}

/**
 * Adds a `history` page to a room's log; returns how many messages were new, or null
 * when the page revealed a replaced store (the room is being reset). Our own messages in
 * it are stored, so their outbox entries go (else they would show twice).
 */
function addHistoryPage(room, messages) {
  for (const msg of messages) {
    if (msg.from === app.me && typeof msg.client_id === 'string') settleOutbox(msg.client_id);
  }
  const added = room.log.addPage(messages);
  if (room.log.replaced) {
    resetRoom(room);
    return null;
  }
  askPresence(messages.map((m) => m.from));
  return added;
}

/**
 * The server's store was replaced (a seq we hold came back under another id): forget
 * the room's messages and join it again from scratch, as on a first visit.
 */
function resetRoom(room) {
  room.log.reset();
  room.epoch += 1;
  room.loadingOlder = false;
  room.fillingGap = false;
  // Its seqs name other messages now: the next `joined` starts it read up to its end.
  room.lastRead = null;
  saveReadPoint(room);
  if (room.id === app.active) renderMessages({ scroll: 'end' });
  updateUnread(room);
  if (app.conn?.isOpen) joinRoom(room);
}

/**
 * Fetches the messages missing between a room's resume point and the lowest message
 * known above it, page by page from the top of the hole, and shows them in place.
 */
async function fillGap(room) {
  if (room.fillingGap) return;
  room.fillingGap = true;
  const epoch = room.epoch;
  try {
    for (let pages = 0; pages < GAP_FILL_MAX_PAGES; pages++) {
      const gap = room.log.gap();
      if (!gap || !room.joined || !app.conn?.isOpen) break;
      let page;
      try {
        page = await app.conn.request({ type: 'history', room: room.id, before: gap.before, limit: gap.limit });
      } catch (err) {
        // A reconnect rejoins with `since` = the resume point, which replays the hole.
        console.debug('gap fill failed', err.code, err.message);
        break;
      }
      if (app.rooms.get(room.id) !== room || room.epoch !== epoch) return;
      const added = addHistoryPage(room, page.messages);
      if (added === null) return;
      if (added === 0) break; // the server has nothing there: do not spin
      if (room.id === app.active) {
        const atBottom = isAtBottom();
        renderMessages({ scroll: atBottom ? 'end' : 'keep' });
      }
      updateUnread(room);
    }
  } finally {
    if (room.epoch === epoch) room.fillingGap = false;
  }
}

/**
 * Recomputes a room's unread count after its log or read point changed. When the user is
 * looking at the room's newest messages (the room shown, scrolled to the bottom, the page
 * visible), its read point moves up to the newest seq first.
 */
function updateUnread(room) {
  if (!room || app.rooms.get(room.id) !== room) return;
  const top = room.log.top();
  const reading = room.id === app.active && !document.hidden && isAtBottom();
  if (reading && room.log.tip !== null && room.lastRead !== null && top > room.lastRead) {
    room.lastRead = top;
    saveReadPoint(room);
  }
  const unread = unreadCount(room.log, room.lastRead, app.me);
  if (unread === room.unread) return;
  room.unread = unread;
  renderSidebar();
  updateTitle();
}

/** Loads the page before the oldest known message (the latest page when none). */
async function loadOlder(room) {
  if (room.loadingOlder || !room.log.hasMore || !app.conn?.isOpen) return;
  room.loadingOlder = true;
  renderOlderControls();
  const epoch = room.epoch;
  const before = room.log.oldest();
  const frame = { type: 'history', room: room.id, limit: PAGE_SIZE };
  if (before !== undefined) frame.before = before;
  let page = null;
  try {
    page = await app.conn.request(frame);
  } catch (err) {
    console.debug('history failed', err.code, err.message);
  } finally {
    if (room.epoch === epoch) room.loadingOlder = false;
  }
  if (app.rooms.get(room.id) !== room || room.epoch !== epoch) return;
  if (page) {
    const added = addHistoryPage(room, page.messages);
    if (added === null) return;
    room.log.hasMore = page.has_more === true;
    if (room.id === app.active) {
      if (added) renderMessages({ scroll: before === undefined ? 'end' : 'keep' });
      else renderOlderControls();
      // Still at the top (a short page, a tall screen): keep going.
      requestAnimationFrame(maybeLoadOlder);
    }
    // Our own messages in the page are not unread.
    updateUnread(room);
  } else if (room.id === app.active) {
    renderOlderControls();
  }
}

function maybeLoadOlder() {
  const room = activeRoom();
  if (room && room.joined && $('scroller').scrollTop < LOAD_OLDER_MARGIN_PX) loadOlder(room);
}

function isAtBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
}

function scrollToBottom() {
  const s = $('scroller');
  s.scrollTop = s.scrollHeight;
  $('jump').hidden = true;
}

/** Rebuilds the message list of the active room. `scroll`: 'end' or 'keep' (the view). */
function renderMessages({ scroll }) {
  const room = activeRoom();
  const scroller = $('scroller');
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const list = $('messages');
  list.setAttribute('data-room', room?.id ?? '');
  const fragment = document.createDocumentFragment();
  let prev = null;
  for (const msg of room ? room.log.sorted() : []) {
    appendMessageNode(fragment, msg, prev);
    prev = msg;
  }
  list.replaceChildren(fragment);
  $('empty').hidden = room !== null;
  renderPending();
  renderOlderControls();
  renderHeader();
  if (scroll === 'end') scrollToBottom();
  else scroller.scrollTop = scroller.scrollHeight - fromBottom;
}

/** Shows a new message of the active room: appended when it is the newest (the usual case). */
function insertMessage(room, msg) {
  const list = $('messages');
  const lastNode = list.lastElementChild; // always a message: day separators precede one
  const lastSeq = lastNode ? Number(lastNode.dataset.seq) : 0;
  const wasAtBottom = isAtBottom();
  if (msg.seq > lastSeq) {
    appendMessageNode(list, msg, lastNode ? room.log.messages.get(lastSeq) : null);
  } else {
    renderMessages({ scroll: 'keep' });
  }
  if (wasAtBottom || msg.from === app.me) scrollToBottom();
  else $('jump').hidden = false;
  renderHeader();
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });

function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return 'Today';
  if (date.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return dayFormat.format(date);
}

function appendMessageNode(parent, msg, prev) {
  const date = new Date(msg.ts);
  const prevDate = prev ? new Date(prev.ts) : null;
  const sameDay = prevDate && prevDate.toDateString() === date.toDateString();
  if (!sameDay) {
    parent.append(h('li', { class: 'day', role: 'separator' }, h('span', { text: dayLabel(date) })));
  }
  const grouped = sameDay && prev.from === msg.from && date - prevDate < GROUP_WINDOW_MS;
  const mine = msg.from === app.me;
  if (!mine) app.users.want([msg.from]);
  const classes = ['msg', mine ? 'mine' : 'theirs', grouped ? 'cont' : ''].filter(Boolean).join(' ');
  const node = h('li', { class: classes, 'data-seq': msg.seq, 'data-id': msg.id });
  if (!mine) {
    const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true' });
    paintAvatar(avatar, displayName(msg.from));
    node.append(avatar);
  }
  node.append(
    h(
      'div',
      { class: 'bubble' },
      h(
        'p',
        { class: 'meta' },
        h(
          'span',
          { class: 'author', 'data-user': msg.from, title: mine ? null : msg.from },
          mine ? 'You' : displayName(msg.from),
          mine ? null : presenceDot(msg.from),
        ),
        ' ',
        h('time', {
          datetime: msg.ts,
          title: Number.isNaN(date.getTime()) ? '' : date.toLocaleString(),
          text: Number.isNaN(date.getTime()) ? '' : timeFormat.format(date),
        }),
      ),
      h('p', { class: 'body', text: msg.body }),
    ),
  );
  parent.append(node);
}

function renderOlderControls() {
  const room = activeRoom();
  const button = $('load-older');
  const start = $('history-start');
  button.hidden = !room || !room.log.hasMore || room.log.tip === null;
  button.disabled = Boolean(room?.loadingOlder);
  button.textContent = room?.loadingOlder ? 'Loading…' : 'Load earlier messages';
  start.hidden = !room || room.log.hasMore;
  if (room) {
    start.textContent = room.peer
      ? `This is the beginning of your conversation with ${displayName(room.peer)}.`
      : `This is the beginning of #${room.id}.`;
  }
}

// ---------------------------------------------------------------- sending

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context; plain http on a LAN address is not one.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function onComposerSubmit(event) {
  event.preventDefault();
  const room = activeRoom();
  const input = $('composer-input');
  const body = input.value.trim();
  if (!room || !body) return;
  const size = utf8Length(body);
  if (size > MAX_BODY_BYTES) {
    $('composer-error').textContent = `Too long: ${size} bytes, the limit is ${MAX_BODY_BYTES}.`;
    return;
  }
  $('composer-error').textContent = '';
  input.value = '';
  // The message clears our "is typing" on other screens: announce the next one as soon
  // as the gateway will relay it, not a full interval later.
  const lastTyping = app.typingSentAt.get(room.id);
  if (lastTyping !== undefined) {
    app.typingSentAt.set(room.id, lastTyping - TYPING_SEND_INTERVAL_MS + TYPING_RELAY_INTERVAL_MS + 100);
  }
  app.outbox.push({ client_id: newClientId(), room: room.id, body, state: 'queued' });
  saveOutbox();
  renderPending();
  scrollToBottom();
  flushOutbox();
  input.focus();
}

function onComposerKeydown(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
}

function onComposerInput() {
  const room = activeRoom();
  if (!room?.joined || !$('composer-input').value.trim()) return;
  const now = Date.now();
  if (now - (app.typingSentAt.get(room.id) ?? 0) < TYPING_SEND_INTERVAL_MS) return;
  if (app.conn.send({ type: 'typing', room: room.id })) app.typingSentAt.set(room.id, now);
}

function saveOutbox() {
  if (!app.me) return;
  storage.set(
    `outbox.${app.me}`,
    app.outbox.map(({ client_id, room, body, state, error }) => ({ client_id, room, body, state, error })),
  );
}

/** Sends every queued message; each keeps its client_id, so a resend is stored once. */
function flushOutbox() {
  if (!app.conn?.isOpen) return;
  for (const item of app.outbox) {
    if (item.state === 'queued' && app.rooms.has(item.room)) sendItem(item);
  }
}

async function sendItem(item) {
  item.state = 'sending';
  renderPending();
  let ack;
  try {
    ack = await app.conn.request({ type: 'send', room: item.room, body: item.body, client_id: item.client_id });
  } catch (err) {
    if (!app.outbox.includes(item)) return; // its `message` arrived meanwhile
    if (err.code === 'disconnected') {
      item.state = 'queued'; // resent after the next `hello`
    } else if (['unavailable', 'timeout', 'rate_limited'].includes(err.code)) {
      item.state = 'queued';
      setTimeout(flushOutbox, SEND_RETRY_MS);
    } else {
      item.state = 'failed';
      item.error = err.message;
    }
    saveOutbox();
    renderPending();
    return;
  }
  settleOutbox(item.client_id);
  // Usually the `message` frame came first and this is a no-op; after a resend the
  // ack may be `duplicate: true` for a seq already shown, or for one below the loaded
  // range (an old message whose ack was lost before a reload): `add` drops both, and
  // scroll-back shows the latter in its place.
  const room = app.rooms.get(item.room);
  if (!room) return;
  const msg = {
    room: item.room,
    seq: ack.seq,
    id: ack.id,
    ts: ack.ts,
    from: app.me,
    body: item.body,
    client_id: item.client_id,
  };
  if (!addToLog(room, msg)) return;
  if (room.id === app.active) insertMessage(room, msg);
  updateUnread(room);
}

/** Removes a stored message from the outbox. */
function settleOutbox(clientId) {
  const index = app.outbox.findIndex((m) => m.client_id === clientId);
  if (index < 0) return;
  app.outbox.splice(index, 1);
  saveOutbox();
  renderPending();
}

function renderPending() {
  const list = $('pending');
  const room = activeRoom();
  const items = room ? app.outbox.filter((m) => m.room === room.id) : [];
  const online = app.conn?.isOpen;
  list.replaceChildren(
    ...items.map((item) => {
      const status =
        item.state === 'failed'
          ? `Not sent: ${item.error ?? 'refused'}`
          : online
            ? 'Sending…'
            : 'Waiting for connection…';
      const meta = h('p', { class: 'meta' }, h('span', { class: 'author' }, 'You'), ' ', h('span', { class: 'state', text: status }));
      if (item.state === 'failed') {
        meta.append(
          ' ',
          h('button', { type: 'button', class: 'link-button', 'data-action': 'retry', text: 'Retry' }),
          ' ',
          h('button', { type: 'button', class: 'link-button', 'data-action': 'discard', text: 'Discard' }),
        );
      }
      return h(
        'li',
        { class: `msg mine pending${item.state === 'failed' ? ' failed' : ''}`, 'data-client-id': item.client_id },
        h('div', { class: 'bubble' }, meta, h('p', { class: 'body', text: item.body })),
      );
    }),
  );
}

function onPendingClick(event) {
  const button = event.target.closest('button[data-action]');
  const node = event.target.closest('li[data-client-id]');
  if (!button || !node) return;
  const item = app.outbox.find((m) => m.client_id === node.dataset.clientId);
  if (!item) return;
  if (button.dataset.action === 'discard') {
    settleOutbox(item.client_id);
  } else {
    item.state = 'queued';
    item.error = undefined;
    saveOutbox();
    flushOutbox();
    renderPending();
  }
  $('composer-input').focus();
}

// ---------------------------------------------------------------- typing

function onTyping({ room: roomId, user }) {
  const room = app.rooms.get(roomId);
  if (!room || typeof user !== 'string' || user === app.me) return;
  clearTimeout(room.typing.get(user));
  app.users.want([user]);
  room.typing.set(
    user,
    setTimeout(() => clearTyping(room, user), TYPING_SHOW_MS),
  );
  askPresence([user]);
  if (room.id === app.active) renderTyping();
}

function clearTyping(room, user) {
  if (!room.typing.has(user)) return;
  clearTimeout(room.typing.get(user));
  room.typing.delete(user);
  if (room.id === app.active) renderTyping();
}

function clearAllTyping(room) {
  for (const timer of room.typing.values()) clearTimeout(timer);
  room.typing.clear();
}

function renderTyping() {
  const users = [...(activeRoom()?.typing.keys() ?? [])].map(displayName);
  $('typing').textContent =
    users.length === 0
      ? ''
      : users.length === 1
        ? `${users[0]} is typing…`
        : users.length === 2
          ? `${users[0]} and ${users[1]} are typing…`
          : 'Several people are typing…';
}

// ---------------------------------------------------------------- presence

function presenceDot(user) {
  const online = app.presence.online.get(user) === true;
  return h('span', {
    class: `dot${online ? ' online' : ''}`,
    'data-user': user,
    role: 'img',
    'aria-label': online ? 'online' : 'offline',
  });
}

function askPresenceFor(room) {
  const users = new Set(room.log.sorted().map((m) => m.from));
  if (room.peer) users.add(room.peer);
  askPresence([...users]);
}

/** Queues users for a batched `presence` query. */
function askPresence(users) {
  if (app.presence.supported === false || !app.conn?.isOpen) return;
  for (const user of users) {
    if (user !== app.me && !app.presence.asked.has(user)) app.presence.wanted.add(user);
  }
  if (app.presence.wanted.size && !app.presence.timer) {
    app.presence.timer = setTimeout(queryPresence, 150);
  }
}

async function queryPresence() {
  const presence = app.presence;
  presence.timer = null;
  const users = [...presence.wanted].slice(0, 500);
  for (const user of users) {
    presence.wanted.delete(user);
    presence.asked.add(user);
  }
  if (!users.length || !app.conn?.isOpen) return;
  const sentAt = presence.clock;
  let reply;
  try {
    reply = await app.conn.request({ type: 'presence', users });
  } catch (err) {
    if (err.code === 'disconnected' || err.code === 'timeout') {
      for (const user of users) presence.asked.delete(user);
      return;
    }
    // `unavailable`: the server has no presence service (yet). Hide the dots and ask
    // again on the next connection.
    presence.supported = false;
    presence.wanted.clear();
    document.body.classList.add('no-presence');
    renderHeader();
    return;
  }
  markPresenceSupported();
  for (const [user, online] of Object.entries(reply.users ?? {})) {
    // An event that arrived while the query was out is newer than its answer.
    if ((presence.eventAt.get(user) ?? 0) > sentAt) continue;
    setOnline(user, online === true, false);
  }
  if (presence.wanted.size) askPresence([]);
}

/**
 * A `presence` event `{room, user, online}`. Events follow the user's online status, not
 * their room membership: `online: true` comes through a room the first time in their
 * online period that they join it, `online: false` once when their last connection
 * anywhere closes, through every room told they were online, also rooms they left
 * meanwhile; a `leave` sends nothing. So the state is the user's, whichever room the
 * event names (one we share, one they left, one we left): a user who left a room stays
 * online until an `online: false`.
 */
function onPresenceEvent({ user, online }) {
  if (typeof user !== 'string' || typeof online !== 'boolean' || user === app.me) return;
  app.presence.clock += 1;
  app.presence.eventAt.set(user, app.presence.clock);
  // Gone everywhere: they are not typing any more either.
  if (!online) for (const room of app.rooms.values()) clearTyping(room, user);
  setOnline(user, online, true);
}

function markPresenceSupported() {
  if (app.presence.supported === true) return;
  app.presence.supported = true;
  document.body.classList.remove('no-presence');
  renderHeader();
}

function setOnline(user, online, fromEvent) {
  app.presence.online.set(user, online);
  if (fromEvent) markPresenceSupported();
  for (const dot of document.querySelectorAll(`.dot[data-user="${CSS.escape(user)}"]`)) {
    dot.classList.toggle('online', online);
    dot.setAttribute('aria-label', online ? 'online' : 'offline');
  }
  renderHeader();
}

// ---------------------------------------------------------------- chrome

function renderHeader() {
  const room = activeRoom();
  $('room-title').textContent = room ? room.label : 'chat';
  let sub = '';
  if (room?.peer) {
    if (app.presence.supported === true && app.presence.online.has(room.peer)) {
      sub = app.presence.online.get(room.peer) ? 'online' : 'offline';
    } else {
      sub = 'direct conversation';
    }
  } else if (room) {
    const people = new Set(room.log.sorted().map((m) => m.from));
    if (people.size) {
      sub = `${people.size} ${people.size === 1 ? 'person' : 'people'} talking`;
      if (app.presence.supported === true) {
        const online = [...people].filter((u) => u === app.me || app.presence.online.get(u)).length;
        sub += `, ${online} online`;
      }
    }
  }
  $('room-sub').textContent = sub;
}

function renderSidebar() {
  const focused = document.activeElement;
  const focusKey = focused?.closest?.('#sidebar li[data-room]')
    ? { room: focused.closest('li').dataset.room, leave: focused.classList.contains('leave') }
    : null;
  const rooms = [];
  const dms = [];
  for (const room of app.rooms.values()) (room.peer ? dms : rooms).push(roomItem(room));
  $('room-list').replaceChildren(...rooms);
  $('dm-list').replaceChildren(...dms);
  if (focusKey) {
    const li = document.querySelector(`#sidebar li[data-room="${CSS.escape(focusKey.room)}"]`);
    li?.querySelector(focusKey.leave ? '.leave' : '.room-button')?.focus();
  }
  const hiddenUnread = [...app.rooms.values()].reduce((n, r) => n + (r.id === app.active ? 0 : r.unread), 0);
  const badge = $('drawer-badge');
  badge.hidden = hiddenUnread === 0;
  badge.textContent = hiddenUnread > 99 ? '99+' : String(hiddenUnread);
}

function roomItem(room) {
  if (room.peer) app.users.want([room.peer]);
  const active = room.id === app.active;
  const button = h(
    'button',
    { type: 'button', class: 'room-button', 'data-room': room.id, 'aria-current': active ? 'true' : null },
    room.peer ? presenceDot(room.peer) : h('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }),
    h('span', { class: 'room-name', text: room.peer ? displayName(room.peer) : room.id }),
  );
  if (room.unread > 0) {
    button.append(
      h('span', { class: 'badge' }, room.unread > 99 ? '99+' : String(room.unread), h('span', { class: 'sr-only', text: ' unread' })),
    );
  }
  const leave = h('button', {
    type: 'button',
    class: 'leave icon-button',
    'aria-label': `Leave ${room.label}`,
    title: `Leave ${room.label}`,
    text: '×',
  });
  return h('li', { 'data-room': room.id, class: active ? 'active' : '' }, button, leave);
}

function onSidebarClick(event) {
  const li = event.target.closest('li[data-room]');
  const room = li && app.rooms.get(li.dataset.room);
  if (!room) return;
  if (event.target.closest('.leave')) leaveRoom(room);
  else if (event.target.closest('.room-button')) {
    setDrawer(false);
    selectRoom(room.id, { focus: true });
  }
}

function updateTitle() {
  const unread = [...app.rooms.values()].reduce((n, r) => n + r.unread, 0);
  const room = activeRoom();
  const base = room ? `${room.label} · chat` : 'chat';
  document.title = unread ? `(${unread}) ${base}` : base;
}

function paintAvatar(node, user) {
  node.textContent = (user[0] ?? '?').toUpperCase();
  // FNV-1a, spread over the colour wheel by the golden ratio: similar names, distinct hues.
  let hash = 0x811c9dc5;
  for (const ch of user) hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  const hue = Math.floor(((hash * 0.6180339887) % 1) * 360);
  // CSSOM, not a style attribute: allowed by the CSP.
  node.style.setProperty('--hue', String(hue));
}

let announceQueue = [];
let announceTimer = null;

/** Tells screen readers about new messages, a burst (a catch-up) as one sentence. */
function announce(msg) {
  announceQueue.push(msg);
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    const queue = announceQueue;
    announceQueue = [];
    const [first] = queue;
    const body = first.body.length > 140 ? `${first.body.slice(0, 140)}…` : first.body;
    $('announcer').textContent = queue.length === 1 ? `${displayName(first.from)}: ${body}` : `${queue.length} new messages`;
  }, 400);
}

function setDrawer(open) {
  const wasOpen = document.body.classList.contains('drawer-open');
  document.body.classList.toggle('drawer-open', open);
  $('drawer-toggle').setAttribute('aria-expanded', String(open));
  $('backdrop').hidden = !open;
  // While the drawer covers the page, keyboard and screen reader stay inside it.
  $('main').inert = open;
  if (open && !wasOpen) {
    (document.querySelector('.room-button[aria-current="true"]') ?? $('join-room')).focus();
  } else if (!open && wasOpen && $('sidebar').contains(document.activeElement)) {
    $('drawer-toggle').focus();
  }
}

// ---------------------------------------------------------------- people and account

/** Names arrived: show them wherever ids were shown. */
function onNamesChanged() {
  if (!app.session) return;
  if (app.me) {
    $('me-name').textContent = displayName(app.me);
    paintAvatar($('me-avatar'), displayName(app.me));
  }
  renderSidebar();
  renderMessages({ scroll: isAtBottom() ? 'end' : 'keep' });
  renderTyping();
  updateTitle();
  const room = activeRoom();
  if (room) {
    $('composer-input').placeholder = `Message ${room.label}`;
    $('composer-input').labels[0].textContent = `Message ${room.label}`;
  }
}

/** Accounts find people by name; dev and token sessions type a user id. */
function setDmMode(account) {
  $('dm-label').textContent = account ? 'Find people' : 'Message a user';
  $('dm-user').placeholder = account ? 'name or username' : 'their user id';
  $('dm-submit').textContent = account ? 'Search' : 'Start';
  clearDmResults();
}

function clearDmResults() {
  $('dm-results').replaceChildren();
  $('dm-results').hidden = true;
}

let searchSeq = 0;

async function searchPeople(query) {
  const seq = ++searchSeq;
  showSidebarError('');
  let reply;
  try {
    reply = await api('GET', `/v1/users/search?q=${encodeURIComponent(query)}&limit=10`, { token: app.account.token });
  } catch (err) {
    if (seq === searchSeq) showSidebarError(errorText(err));
    return;
  }
  if (seq !== searchSeq || app.session?.mode !== 'account') return;
  const users = (reply?.users ?? []).filter((u) => typeof u?.id === 'string' && u.id !== app.me);
  app.users.remember(users);
  const list = $('dm-results');
  list.replaceChildren(
    ...users.map((u) =>
      h(
        'li',
        {},
        h(
          'button',
          { type: 'button', class: 'person', 'data-user': u.id, 'aria-label': `Message ${u.display_name || u.username} (@${u.username})` },
          h('span', { class: 'person-name', text: u.display_name || u.username }),
          ' ',
          h('span', { class: 'person-handle', text: `@${u.username}` }),
        ),
      ),
    ),
  );
  if (!users.length) list.append(h('li', { class: 'hint', text: 'Nobody found.' }));
  list.hidden = false;
}

function onDmResultsClick(event) {
  const button = event.target.closest('button[data-user]');
  if (!button || !app.me) return;
  const id = dmRoom(app.me, button.dataset.user);
  if (!id) {
    showSidebarError('Cannot start a conversation with this user.');
    return;
  }
  clearDmResults();
  $('dm-user').value = '';
  addRoom(id);
}

function openAccountDialog() {
  const user = app.account.user;
  if (!user) return;
  $('account-username').textContent = user.username ?? user.id;
  $('rename-input').value = user.display_name ?? '';
  $('account-error').textContent = '';
  $('account-status').textContent = '';
  for (const id of ['password-current', 'password-new', 'delete-password']) $(id).value = '';
  const dialog = $('account-dialog');
  if (!dialog.open) dialog.showModal();
  $('rename-input').focus();
}

function closeAccountDialog() {
  const dialog = $('account-dialog');
  if (dialog.open) dialog.close();
}

/** Runs one account action from the dialog, with its button disabled and errors shown. */
async function accountAction(button, action) {
  $('account-error').textContent = '';
  $('account-status').textContent = '';
  button.disabled = true;
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      // The token expired under us: refresh and let the user try again.
      await app.account.refresh().catch(() => false);
    }
    $('account-error').textContent = errorText(err);
  } finally {
    button.disabled = false;
  }
}

function onRename(event) {
  event.preventDefault();
  const display = $('rename-input').value.trim();
  accountAction(event.submitter ?? $('rename-form').querySelector('button'), async () => {
    if (!display) throw new ApiError(400, 'bad_request', 'A display name cannot be empty.');
    const reply = await api('PATCH', '/v1/users/me', { body: { display_name: display }, token: app.account.token });
    const user = reply?.user ?? reply ?? { ...app.account.user, display_name: display };
    app.account.user = { ...app.account.user, display_name: user.display_name ?? display };
    app.users.remember([app.account.user]);
    $('account-status').textContent = 'Display name saved.';
  });
}

function onPasswordChange(event) {
  event.preventDefault();
  const current = $('password-current').value;
  const next = $('password-new').value;
  accountAction(event.submitter ?? $('password-form').querySelector('button'), async () => {
    if (!current || !next) throw new ApiError(400, 'bad_request', 'Enter your current and your new password.');
    await api('POST', '/v1/auth/password', {
      body: { current_password: current, new_password: next },
      token: app.account.token,
    });
    $('password-current').value = '';
    $('password-new').value = '';
    $('account-status').textContent = 'Password changed. Your other devices were signed out.';
  });
}

async function onLogout(all) {
  const button = all ? $('logout-all') : $('logout');
  await accountAction(button, async () => {
    try {
      await api('POST', all ? '/v1/auth/logout-all' : '/v1/auth/logout', { token: app.account.token });
    } catch (err) {
      // An expired or revoked session is as logged out as it gets.
      if (!(err instanceof ApiError) || err.status !== 401) throw err;
    }
    app.account.clear({ broadcast: true });
    signOut('', { notice: all ? 'You logged out on every device.' : 'You logged out.' });
  });
}

function onDeleteAccount(event) {
  event.preventDefault();
  const password = $('delete-password').value;
  accountAction(event.submitter ?? $('delete-form').querySelector('button'), async () => {
    if (!password) throw new ApiError(400, 'bad_request', 'Type your password to confirm.');
    await api('DELETE', '/v1/users/me', { body: { password }, token: app.account.token });
    app.account.clear({ broadcast: true });
    signOut('', { notice: 'Your account was deleted.' });
  });
}

// ---------------------------------------------------------------- wiring

function wire() {
  const signin = $('signin-form');
  signin.addEventListener('submit', onSignin);
  signin.addEventListener('change', (e) => {
    if (e.target.name === 'mode') {
      setSigninMode(e.target.value);
      $('signin-error').textContent = '';
    }
  });
  $('signout').addEventListener('click', () => signOut());
  $('account-open').addEventListener('click', openAccountDialog);
  $('account-close').addEventListener('click', closeAccountDialog);
  $('rename-form').addEventListener('submit', onRename);
  $('password-form').addEventListener('submit', onPasswordChange);
  $('delete-form').addEventListener('submit', onDeleteAccount);
  $('logout').addEventListener('click', () => onLogout(false));
  $('logout-all').addEventListener('click', () => onLogout(true));
  $('dm-results').addEventListener('click', onDmResultsClick);
  app.users.addEventListener('change', onNamesChanged);
  // A renewed token: hand it to the live socket (the next reconnect reads it anyway).
  app.account.addEventListener('token', (e) => {
    if (app.session?.mode === 'account' && app.conn?.isOpen) app.conn.renew(e.detail.token);
  });
  app.account.addEventListener('ended', (e) => {
    if (app.session?.mode === 'account') signOut('', { notice: e.detail.message });
  });
  $('retry-now').addEventListener('click', () => app.conn?.retryNow());
  $('join-form').addEventListener('submit', onJoinSubmit);
  $('dm-form').addEventListener('submit', onDmSubmit);
  $('sidebar').addEventListener('click', onSidebarClick);
  $('composer').addEventListener('submit', onComposerSubmit);
  $('composer-input').addEventListener('keydown', onComposerKeydown);
  $('composer-input').addEventListener('input', onComposerInput);
  $('pending').addEventListener('click', onPendingClick);
  $('load-older').addEventListener('click', () => {
    const room = activeRoom();
    if (room) loadOlder(room);
  });
  $('scroller').addEventListener(
    'scroll',
    () => {
      if (isAtBottom()) {
        $('jump').hidden = true;
        updateUnread(activeRoom());
      }
      maybeLoadOlder();
    },
    { passive: true },
  );
  $('jump').addEventListener('click', () => {
    scrollToBottom();
    $('composer-input').focus();
  });
  $('drawer-toggle').addEventListener('click', () => setDrawer(!document.body.classList.contains('drawer-open')));
  $('backdrop').addEventListener('click', () => setDrawer(false));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('drawer-open')) setDrawer(false);
  });
  // The drawer only exists on narrow screens; widening the window closes it.
  matchMedia('(min-width: 721px)').addEventListener('change', (e) => e.matches && setDrawer(false));
  window.addEventListener('online', () => app.conn?.retryNow());
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    app.conn?.retryNow();
    updateUnread(activeRoom());
  });
  // Another tab signed out or in: follow it.
  window.addEventListener('storage', (e) => {
    if (e.key === `${STORAGE_PREFIX}session` && e.newValue === null && app.session && app.session.mode !== 'account') {
      signOut();
    }
  });
}

/**
 * First screen: ask what the server offers, then try the refresh cookie (a returning
 * account user stays signed in), then a saved dev name or pasted token, else sign-in.
 */
async function boot() {
  wire();
  app.methods = await authMethods();
  if (app.methods.accounts) {
    try {
      if (await app.account.refresh()) {
        startChat({ mode: 'account' });
        return;
      }
    } catch {
      // Cannot reach the server: fall through to the sign-in screen.
    }
  }
  const saved = storage.get('session', null);
  const allowed = saved && (saved.mode === 'user' ? app.methods.dev || !app.methods.known : app.methods.external_tokens || !app.methods.known);
  if (allowed && (saved.mode === 'user' ? isValidUser(saved.user) : typeof saved.token === 'string')) {
    startChat(saved);
  } else {
    showSignin();
  }
}

boot();
