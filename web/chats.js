// What the page knows about the user's chats: the list, each chat's messages (deduplicated by
// `seq`), its in-flight AI replies, who is online and typing, and what has been read.

import { h } from './dom.js';

/** One chat as the page holds it. */
export class ChatState {
  constructor(chat) {
    /** ChatResponse. */
    this.chat = chat;
    /** Highest `seq` known to exist (from `subscribed.last_seq` and `message` events). */
    this.lastSeq = 0;
    /** Highest `seq` received over the socket in order: where `since_seq` resumes. */
    this.resumeSeq = null;
    /** Messages by `seq`. */
    this.messages = new Map();
    /** Message ids already held, so that a reply announced twice is shown once. */
    this.ids = new Set();
    /** Lowest `seq` loaded; older ones are fetched on demand. */
    this.oldestLoaded = null;
    /** Whether the latest history was fetched over REST since the page opened. */
    this.historyLoaded = false;
    /** The history request in flight, shared by whoever needs it. */
    this.historyPromise = null;
    /** The chat's room in the client library (once joined). */
    this.room = null;
    /** AI replies being generated (the library's `Reply`s), by generation id. */
    this.generations = new Map();
    /** How finished AI replies ended (`stop`, `cancelled`, …), by message id. */
    this.finishReasons = new Map();
    /** Users online in the room. */
    this.online = new Set();
    /** Users typing, with when their indicator lapses. */
    this.typing = new Map();
    /** Whether this tab's session is subscribed to the room. */
    this.subscribed = false;
  }

  /** Adds a message unless it is already held; true when it is new. */
  add(message) {
    if (this.messages.has(message.seq) || this.ids.has(message.id)) return false;
    this.messages.set(message.seq, message);
    this.ids.add(message.id);
    if (message.seq > this.lastSeq) this.lastSeq = message.seq;
    if (this.oldestLoaded === null || message.seq < this.oldestLoaded) this.oldestLoaded = message.seq;
    return true;
  }

  /** Messages in `seq` order. */
  ordered() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }
}

/** Every chat of the signed-in user, plus read positions kept in localStorage. */
export class ChatStore extends EventTarget {
  constructor(userId) {
    super();
    this.userId = userId;
    this.chats = new Map();
    this.storageKey = `echo.read.v1.${userId}`;
    try {
      this.read = JSON.parse(localStorage.getItem(this.storageKey) || '{}') || {};
    } catch {
      this.read = {};
    }
  }

  changed(what, chatId) {
    this.dispatchEvent(new CustomEvent('change', { detail: { what, chatId } }));
  }

  get(id) { return this.chats.get(id); }

  /** Replaces the list from `GET /chats/`, keeping what is known about chats still there. */
  setList(list) {
    const next = new Map();
    for (const chat of list) {
      const state = this.chats.get(chat.id) || new ChatState(chat);
      state.chat = chat;
      next.set(chat.id, state);
    }
    this.chats = next;
    this.changed('list');
  }

  /** Adds or updates one chat (created here, renamed, or joined). */
  upsert(chat) {
    const state = this.chats.get(chat.id);
    if (state) state.chat = { ...state.chat, ...chat };
    else this.chats.set(chat.id, new ChatState(chat));
    this.changed('list', chat.id);
    return this.chats.get(chat.id);
  }

  remove(id) {
    if (this.chats.delete(id)) {
      delete this.read[id];
      this.saveRead();
      this.changed('list', id);
    }
  }

  /** Chats, most recently active first. */
  sorted() {
    return [...this.chats.values()].sort((a, b) =>
      String(b.chat.updated_at).localeCompare(String(a.chat.updated_at)));
  }

  lastRead(id) { return this.read[id] ?? 0; }

  /** Messages after the read position. */
  unread(id) {
    const state = this.chats.get(id);
    if (!state) return 0;
    return Math.max(0, state.lastSeq - this.lastRead(id));
  }

  totalUnread() {
    let n = 0;
    for (const id of this.chats.keys()) n += this.unread(id);
    return n;
  }

  /** Everything up to the chat's last message has been seen. */
  markRead(id) {
    const state = this.chats.get(id);
    if (!state || this.lastRead(id) >= state.lastSeq) return;
    this.read[id] = state.lastSeq;
    this.saveRead();
    this.changed('unread', id);
  }

  /** One's own message, sent from another tab or device, does not make a chat unread. */
  ownMessage(id, seq) {
    if (this.lastRead(id) === seq - 1) {
      this.read[id] = seq;
      this.saveRead();
    }
  }

  saveRead() {
    try {
      localStorage.setItem(this.storageKey, JSON.stringify(this.read));
    } catch {
      // Storage full or disabled: unread counts then last for this page only.
    }
  }
}

/** Renders the chat list into `ul` (updating rows in place); `activeId` is the open chat. */
export function renderChatList(ul, store, activeId) {
  const existing = new Map([...ul.children].map((li) => [li.dataset.chatId, li]));
  store.sorted().forEach((state, i) => {
    const { chat } = state;
    let li = existing.get(chat.id);
    existing.delete(chat.id);
    if (!li) {
      li = h('li', { dataset: { chatId: chat.id } },
        h('a', { class: 'chat-link', href: `#/chats/${chat.id}` },
          h('span', { class: 'chat-title' }),
          h('span', { class: 'badge', 'aria-hidden': 'true' })));
    }
    const a = li.firstElementChild;
    const unread = store.unread(chat.id);
    a.classList.toggle('active', chat.id === activeId);
    if (chat.id === activeId) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
    a.setAttribute('aria-label', unread ? `${chat.title}, ${unread} unread` : chat.title);
    a.querySelector('.chat-title').textContent = chat.title;
    const badge = a.querySelector('.badge');
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.hidden = unread === 0;
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
  });
  for (const li of existing.values()) li.remove();
}
