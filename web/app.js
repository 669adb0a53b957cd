// Echo's web client: sign-in, the chat list with unread counts, the open room, videos, and the
// realtime connection that feeds them all. Plain ES modules, served by echo-server at /app; the
// protocol itself is Echo's client library (clients/js, served as /app/echo-client.js).

import { Api, ApiError, tokenClaims } from './api.js';
import { ChatStore, renderChatList } from './chats.js';
import { $, isUuid, showError } from './dom.js';
import { Realtime } from './realtime.js';
import { RoomView } from './room.js';
import { VideoView } from './videos.js';

const TOKEN_KEY = 'echo.token';
/** Rooms subscribed at once: the most recently active chats (the open one always). */
const MAX_SUBSCRIPTIONS = 30;

/** The signed-in session of the page; rebuilt on every sign-in. */
let session = null;
let config = { dev_sign_in: false };

/** Display names of users, fetched once each. */
class Names {
  constructor(api, me, onResolved) {
    this.api = api;
    this.cache = new Map([[me.id, displayName(me)]]);
    this.asked = new Set([me.id]);
    this.onResolved = onResolved;
  }

  nameOf(id) {
    if (this.cache.has(id)) return this.cache.get(id);
    if (!this.asked.has(id)) {
      this.asked.add(id);
      this.api.user(id).then((u) => {
        this.cache.set(id, displayName(u));
        this.onResolved();
      }).catch(() => {});
    }
    return `user ${id.slice(0, 8)}`;
  }
}

function displayName(user) {
  return user.full_name || user.username || `user ${String(user.id).slice(0, 8)}`;
}

// ---------------------------------------------------------------------------------------------
// Sign-in

async function boot() {
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token-input').value.trim());
  });
  $('dev-form').addEventListener('submit', (e) => {
    e.preventDefault();
    devSignIn();
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('copy-user-id').addEventListener('click', copyUserId);
  $('reconnect-now').addEventListener('click', () => session?.realtime.retryNow());
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => session && markOpenChatRead());
  try {
    const res = await fetch('/app/config.json', { headers: { accept: 'application/json' } });
    if (res.ok) config = await res.json();
  } catch {
    // Without the config the page still works; only development sign-in is not offered.
  }
  $('dev-form').hidden = !config.dev_sign_in;
  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved) await signIn(saved, { quiet: true });
  else showSignIn();
}

function showSignIn(message = '') {
  $('signin').hidden = false;
  $('workspace').hidden = true;
  $('whoami').hidden = true;
  showError($('signin-error'), message);
  setConnection('signed-out', 'Signed out');
  if (location.hash && location.hash !== '#/') history.replaceState(null, '', '#/');
}

async function signIn(token, { quiet = false } = {}) {
  if (!token) return;
  const claims = tokenClaims(token);
  if (!claims?.sub) {
    showSignIn(quiet ? '' : 'That is not a JWT (three base64url parts separated by dots).');
    return;
  }
  if (claims.exp && claims.exp * 1000 < Date.now()) {
    localStorage.removeItem(TOKEN_KEY);
    showSignIn(quiet ? 'Your saved session expired: sign in again.' : 'This token has expired.');
    return;
  }
  const api = new Api(() => token, () => {});
  let me;
  try {
    me = await api.me();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      showSignIn('The server refused this token.');
    } else {
      showSignIn(`Could not sign in: ${e.message}`);
    }
    return;
  }
  localStorage.setItem(TOKEN_KEY, token);
  $('token-input').value = '';
  start(token, me);
}

async function devSignIn() {
  const button = $('dev-sign-in');
  const name = $('dev-name').value.trim();
  const userId = $('dev-user-id').value.trim();
  if (userId && !isUuid(userId)) {
    showError($('signin-error'), 'The user id must be a UUID (or left empty for a new user).');
    return;
  }
  button.disabled = true;
  try {
    const res = await fetch('/dev/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ ...(name ? { name } : {}), ...(userId ? { user_id: userId } : {}) }),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok || !body?.token) {
      showError($('signin-error'), `Development sign-in failed: ${new ApiError(res.status, body?.detail).message}`);
      return;
    }
    await signIn(body.token);
  } catch {
    showError($('signin-error'), 'Development sign-in failed: the server cannot be reached.');
  } finally {
    button.disabled = false;
  }
}

function signOut(message = '') {
  if (session) {
    session.realtime.close();
    session = null;
  }
  localStorage.removeItem(TOKEN_KEY);
  $('chat-list').replaceChildren();
  $('message-list').replaceChildren();
  $('job-list').replaceChildren();
  document.title = 'Echo';
  showSignIn(message);
}

async function copyUserId() {
  if (!session) return;
  const button = $('copy-user-id');
  try {
    await navigator.clipboard.writeText(session.me.id);
    button.textContent = 'Copied';
  } catch {
    // No clipboard permission (or an insecure origin): show it for manual copying.
    button.textContent = session.me.id;
  }
  setTimeout(() => { button.textContent = 'Copy my id'; }, 4000);
}

// ---------------------------------------------------------------------------------------------
// The signed-in page

function start(token, me) {
  if (session) session.realtime.close();
  const expired = () => signOut('Your session expired or was revoked: sign in again.');
  const api = new Api(() => token, expired);
  const realtime = new Realtime(() => token, { userId: me.id });
  const store = new ChatStore(me.id);
  const s = { token, me, api, realtime, store, activeChat: null, view: 'list', subscribing: null };
  session = s;
  s.names = new Names(api, me, () => {
    if (session === s) s.room.render();
  });
  const roomOf = (chatId) => {
    const state = s.store.get(chatId);
    return state ? ensureRoom(s, state) : realtime.subscribe(chatId);
  };
  s.room = new RoomView({ store, realtime, api, names: s.names, me, roomOf });
  s.videos = new VideoView({ api, realtime });

  $('signin').hidden = true;
  $('workspace').hidden = false;
  $('whoami').hidden = false;
  $('whoami-name').textContent = displayName(me);
  $('whoami-name').title = `Your user id: ${me.id}`;

  store.addEventListener('change', () => renderList());
  realtime.on('state', (e) => onConnectionState(e));
  realtime.on('open', () => onOpen(s));
  realtime.on('close', () => onDropped(s));
  realtime.on('outbox', () => {
    if (session === s && s.activeChat) s.room.render();
  });
  realtime.on('send_failed', ({ entry, error }) => {
    if (session === s) s.room.sendFailed(entry, error);
  });
  bindFeed(s);
  bindChatForms(s);
  realtime.start();
  loadChats(s);
  route();
}

async function loadChats(s) {
  try {
    const list = await s.api.chats();
    if (session !== s) return;
    s.store.setList(list);
    showError($('chat-list-error'), '');
    $('chat-list-empty').hidden = list.length > 0;
    if (s.realtime.state === 'online') await subscribeAll(s);
    route();
  } catch (e) {
    showError($('chat-list-error'), `Could not load your chats: ${e.message}`);
  }
}

/** The socket dropped: nobody is known to be online (the library marks replies stale). */
function onDropped(s) {
  for (const state of s.store.chats.values()) {
    state.subscribed = false;
    state.online.clear();
    state.typing.clear();
  }
  if (s.activeChat) s.room.render();
}

/**
 * After every (re)connect the library resubscribes the rooms already joined, each resuming
 * after its last `seq`, and sends what waits in the outbox; here the rooms not joined yet are.
 */
async function onOpen(s) {
  if (s.view === 'videos') s.videos.refreshLive();
  await subscribeAll(s);
}

async function subscribeAll(s) {
  // One pass at a time; a second call waits for it and then covers what it missed.
  while (s.subscribing) await s.subscribing;
  s.subscribing = (async () => {
    const wanted = s.store.sorted().slice(0, MAX_SUBSCRIPTIONS);
    const open = s.activeChat && s.store.get(s.activeChat);
    if (open && !wanted.includes(open)) wanted.unshift(open);
    for (const state of wanted) {
      if (session !== s || s.realtime.state !== 'online') break;
      if (!state.subscribed) await subscribe(s, state);
    }
  })();
  try { await s.subscribing; } finally { s.subscribing = null; }
}

/** Joins a chat's room (once; the library keeps it joined across reconnects). */
async function subscribe(s, state) {
  const room = ensureRoom(s, state);
  try {
    await room.ready;
  } catch {
    // Not found: handled by the room's `error` listener.
  }
}

/** The chat's room in the client library, created and listened to once. */
function ensureRoom(s, state) {
  if (state.room && !state.room.closed) return state.room;
  const chatId = state.chat.id;
  const room = s.realtime.subscribe(chatId, { sinceSeq: state.resumeSeq });
  state.room = room;
  const live = () => session === s && state.room === room;
  room.on('subscribed', (e) => {
    if (live()) onSubscribed(s, state, e);
  });
  room.on('error', (e) => {
    if (live() && e.code === 'not_found') s.store.remove(chatId); // deleted, or we were removed
  });
  room.on('message', (m) => {
    if (live()) onMessage(s, state, m);
  });
  room.on('presence', (p) => {
    if (!live()) return;
    if (p.state === 'join') state.online.add(p.user_id);
    else state.online.delete(p.user_id);
    if (s.activeChat === chatId) s.room.renderPresence(state);
  });
  room.on('typing', (t) => {
    if (live() && t.user_id !== s.me.id) s.room.typing(state, t.user_id);
  });
  room.on('generation', (reply) => {
    if (live()) onGeneration(s, state, reply);
  });
  return room;
}

/** The room is (re)subscribed: who is online, where it stands, and history if it fell behind. */
async function onSubscribed(s, state, reply) {
  const chatId = state.chat.id;
  state.subscribed = true;
  state.online = new Set(reply.online || []);
  if (reply.lastSeq > state.lastSeq) state.lastSeq = reply.lastSeq;
  if (!reply.recovered) {
    // Too much was missed to replay: start again from the latest history.
    state.messages.clear();
    state.ids.clear();
    state.oldestLoaded = null;
    state.historyLoaded = false;
  }
  state.resumeSeq = Math.max(state.resumeSeq ?? 0, reply.lastSeq);
  if (s.activeChat === chatId) {
    await ensureHistory(s, state);
    s.room.render();
  }
  renderList();
}

/** Loads a chat's latest history once (concurrent callers share the request). */
function ensureHistory(s, state) {
  if (state.historyLoaded) return Promise.resolve();
  if (!state.historyPromise) {
    state.historyPromise = loadHistory(s, state).finally(() => { state.historyPromise = null; });
  }
  return state.historyPromise;
}

/**
 * The latest messages of a chat over REST. They are contiguous up to the newest, so the
 * socket may resume after them (`since_seq`) whether or not it subscribed first.
 */
async function loadHistory(s, state) {
  try {
    const detail = await s.api.chat(state.chat.id);
    state.historyLoaded = true;
    state.chat = { ...state.chat, ...pickChat(detail) };
    const messages = detail.messages || [];
    for (const m of messages) state.add(m);
    if (messages.length) {
      const newest = messages[messages.length - 1].seq;
      state.resumeSeq = Math.max(state.resumeSeq ?? 0, newest);
      state.room?.resumeFrom(newest);
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      s.store.remove(state.chat.id);
      location.hash = '#/chats';
      return;
    }
    s.room.notice(`Could not load the messages: ${e.message}`);
  }
}

function pickChat(c) {
  return { id: c.id, title: c.title, created_at: c.created_at, updated_at: c.updated_at };
}

// ---------------------------------------------------------------------------------------------
// Server events

/** A message of a room, from the library: once each, in `seq` order. */
function onMessage(s, state, m) {
  if (state.resumeSeq === null || m.seq > state.resumeSeq) state.resumeSeq = m.seq;
  if (!state.add(m)) return;
  if (m.user_id === s.me.id && m.role === 'user') s.store.ownMessage(state.chat.id, m.seq);
  state.typing.delete(m.user_id);
  for (const [id, g] of state.generations) if (g.messageId === m.id) state.generations.delete(id);
  if (m.created_at && String(m.created_at) > String(state.chat.updated_at)) {
    state.chat.updated_at = m.created_at;
  }
  if (s.activeChat === state.chat.id) s.room.render();
  markOpenChatRead();
  renderList();
}

/**
 * An AI reply in a room (the library's `Reply`: started here, by someone else, or caught up
 * with from a snapshot): it grows token by token, then settles on the stored message.
 */
function onGeneration(s, state, reply) {
  const chatId = state.chat.id;
  state.generations.set(reply.generationId, reply);
  if (s.activeChat === chatId) s.room.render();
  (async () => {
    try {
      for await (const delta of reply) { // eslint-disable-line no-unused-vars
        if (session !== s) return;
        s.room.growGeneration(state, reply);
      }
    } catch {
      // Failed: shown from `reply.status` and `reply.error`.
    }
  })();
  reply.result.then(({ message, finishReason }) => {
    if (session !== s) return;
    state.generations.delete(reply.generationId);
    if (message) {
      if (finishReason) state.finishReasons.set(message.id, finishReason);
      // Only `message` events (in order) move the resume point; this one is announced too.
      state.add(message);
    }
    if (s.activeChat === chatId) s.room.render();
    markOpenChatRead();
    renderList();
  }, () => {
    if (session === s && s.activeChat === chatId) s.room.render();
  });
}

/** Events of the user's feed and of chats as a whole. */
function bindFeed(s) {
  const r = s.realtime;
  const live = () => session === s;
  r.on('chat_updated', (chat) => {
    if (!live()) return;
    if (s.store.get(chat.id)) s.store.upsert(chat);
    if (s.activeChat === chat.id) s.room.render();
  });
  r.on('chat_deleted', ({ chat_id: chatId }) => {
    if (!live()) return;
    s.store.remove(chatId);
    if (s.activeChat === chatId) {
      location.hash = '#/chats';
      showError($('chat-list-error'), 'The chat you had open was deleted.');
    }
  });
  r.on('member_added', ({ chat_id: chatId, user_id: userId }) => {
    if (live() && userId === s.me.id && !s.store.get(chatId)) joinChat(s, chatId);
  });
  r.on('member_removed', ({ chat_id: chatId, user_id: userId }) => {
    if (!live() || userId !== s.me.id) return;
    s.store.remove(chatId);
    if (s.activeChat === chatId) location.hash = '#/chats';
  });
  r.on('job', (job) => {
    if (live()) s.videos.onJob(job);
  });
}

async function joinChat(s, chatId) {
  try {
    const detail = await s.api.chat(chatId);
    if (session !== s) return;
    const state = s.store.upsert(pickChat(detail));
    $('chat-list-empty').hidden = true;
    if (s.realtime.state === 'online') await subscribe(s, state);
  } catch {
    // Removed again before we looked: nothing to show.
  }
}

// ---------------------------------------------------------------------------------------------
// Connection state

function onConnectionState({ state, attempt, retryInMs, reason }) {
  const retry = $('reconnect-now');
  retry.hidden = !(state === 'reconnecting' && retryInMs > 0);
  clearInterval(onConnectionState.countdown);
  switch (state) {
    case 'connecting':
      setConnection('connecting', 'Connecting…');
      break;
    case 'online':
      setConnection('online', 'Online');
      break;
    case 'reconnecting': {
      if (!retryInMs) {
        setConnection('reconnecting', `Reconnecting… (attempt ${attempt + 1})`);
        break;
      }
      const until = Date.now() + retryInMs;
      const show = () => {
        const secs = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        setConnection('reconnecting', `Disconnected${reason ? `: ${reason}` : ''}. Reconnecting in ${secs} s…`);
      };
      show();
      onConnectionState.countdown = setInterval(show, 500);
      break;
    }
    case 'offline':
      setConnection('offline', `${reason ? `Disconnected: ${reason}. ` : ''}Offline: waiting for the network…`);
      break;
    case 'expired':
      signOut('Your session expired: sign in again.');
      break;
    default:
  }
}

function setConnection(state, text) {
  const el = $('connection');
  el.dataset.state = state;
  $('connection-text').textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Views

function route() {
  if (!session) return;
  const s = session;
  const hash = location.hash || '#/chats';
  const chatMatch = hash.match(/^#\/chats\/([0-9a-f-]{36})$/i);
  let view = 'list';
  let chatId = null;
  if (hash === '#/videos') view = 'videos';
  else if (chatMatch && s.store.get(chatMatch[1])) {
    view = 'room';
    chatId = chatMatch[1];
  } else if (chatMatch && s.store.chats.size === 0) {
    view = 'list'; // the list is still loading; `loadChats` routes again
  }
  s.view = view;
  s.activeChat = chatId;
  const ws = $('workspace');
  ws.dataset.view = view;
  $('room').hidden = view !== 'room';
  $('no-room').hidden = view !== 'list';
  $('videos').hidden = view !== 'videos';
  $('tab-chats').classList.toggle('active', view !== 'videos');
  $('tab-videos').classList.toggle('active', view === 'videos');
  setCurrent($('tab-chats'), view !== 'videos');
  setCurrent($('tab-videos'), view === 'videos');
  hideRoomForms();
  if (view === 'room') {
    const state = s.store.get(chatId);
    s.room.open(chatId);
    if (!state.historyLoaded) {
      ensureHistory(s, state).then(() => {
        if (s.activeChat === chatId) s.room.render({ scrollToEnd: true });
        markOpenChatRead();
      });
    }
    if (!state.subscribed && s.realtime.state === 'online') subscribeAll(s);
    markOpenChatRead();
  } else {
    s.room.close();
  }
  if (view === 'videos') s.videos.open();
  renderList();
}

function setCurrent(el, current) {
  if (current) el.setAttribute('aria-current', 'page');
  else el.removeAttribute('aria-current');
}

function renderList() {
  if (!session) return;
  const s = session;
  renderChatList($('chat-list'), s.store, s.activeChat);
  $('chat-list-empty').hidden = s.store.chats.size > 0;
  const total = s.store.totalUnread();
  const badge = $('total-unread');
  badge.textContent = total > 99 ? '99+' : String(total);
  badge.hidden = total === 0;
  document.title = total ? `(${total}) Echo` : 'Echo';
}

function markOpenChatRead() {
  const s = session;
  if (!s || !s.activeChat || document.visibilityState !== 'visible') return;
  s.store.markRead(s.activeChat);
}

function hideRoomForms() {
  for (const [toggle, panel] of [['rename-toggle', 'rename-form'], ['members-toggle', 'member-form'],
    ['delete-toggle', 'delete-confirm']]) {
    $(panel).hidden = true;
    $(toggle).setAttribute('aria-expanded', 'false');
  }
}

function togglePanel(toggleId, panelId, focusId) {
  const panel = $(panelId);
  const open = panel.hidden;
  hideRoomForms();
  panel.hidden = !open;
  $(toggleId).setAttribute('aria-expanded', String(open));
  if (open && focusId) $(focusId).focus();
}

function bindChatForms(s) {
  // The forms outlive sessions; bind them once and read the current session when used.
  if (bindChatForms.done) return;
  bindChatForms.done = true;
  $('create-chat-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const cur = session;
    if (!cur) return;
    const input = $('new-chat-title');
    const button = e.submitter || input.form.querySelector('button');
    button.disabled = true;
    try {
      const chat = await cur.api.createChat(input.value.trim());
      input.value = '';
      const state = cur.store.upsert(pickChat(chat));
      state.historyLoaded = true;
      showError($('chat-list-error'), '');
      if (cur.realtime.state === 'online') await subscribe(cur, state);
      location.hash = `#/chats/${chat.id}`;
    } catch (err) {
      showError($('chat-list-error'), `Could not create the chat: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  });
  $('rename-toggle').addEventListener('click', () => {
    const cur = session;
    const state = cur?.activeChat && cur.store.get(cur.activeChat);
    if (state) $('rename-input').value = state.chat.title;
    togglePanel('rename-toggle', 'rename-form', 'rename-input');
  });
  $('rename-cancel').addEventListener('click', () => {
    hideRoomForms();
    $('rename-toggle').focus();
  });
  $('rename-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const cur = session;
    if (!cur?.activeChat) return;
    try {
      const chat = await cur.api.renameChat(cur.activeChat, $('rename-input').value.trim());
      cur.store.upsert(pickChat(chat));
      cur.room.render();
      hideRoomForms();
      cur.room.notice('');
      $('rename-toggle').focus();
    } catch (err) {
      cur.room.notice(`Could not rename: ${err.message}`);
    }
  });
  $('members-toggle').addEventListener('click', () => togglePanel('members-toggle', 'member-form', 'member-input'));
  $('member-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const cur = session;
    if (!cur?.activeChat) return;
    const input = $('member-input');
    const id = input.value.trim();
    if (!isUuid(id)) {
      cur.room.notice('A user id is a UUID, like 2f1c…-…; ask the person for theirs ("Copy my id").');
      return;
    }
    try {
      await cur.api.addMember(cur.activeChat, id);
      input.value = '';
      hideRoomForms();
      cur.room.notice(`Added ${cur.names.nameOf(id)} to the chat.`);
      $('members-toggle').focus();
    } catch (err) {
      cur.room.notice(`Could not add the member: ${err.message}`);
    }
  });
  $('delete-toggle').addEventListener('click', () => togglePanel('delete-toggle', 'delete-confirm', 'delete-cancel'));
  $('delete-cancel').addEventListener('click', () => {
    hideRoomForms();
    $('delete-toggle').focus();
  });
  $('delete-chat').addEventListener('click', async () => {
    const cur = session;
    if (!cur?.activeChat) return;
    const id = cur.activeChat;
    try {
      await cur.api.deleteChat(id);
      cur.activeChat = null; // our own chat_deleted event is no surprise
      cur.store.remove(id);
      location.hash = '#/chats';
      $('new-chat-title').focus();
    } catch (err) {
      cur.room.notice(`Could not delete the chat: ${err.message}`);
    }
  });
}

boot();
