// The open chat: messages in `seq` order, AI replies growing token by token in place, who is
// online and typing, and the composer. Sends go through the client library's outbox (one
// `client_msg_id` each, sent again after a reconnect until stored, kept across reloads).

import { $, h, formatTime } from './dom.js';

/** How long a `typing` event keeps its indicator up. */
const TYPING_SHOWN_MS = 3500;
/** Least interval between two `typing` frames from this tab. */
const TYPING_SEND_MS = 2000;
/** How close to the bottom (px) counts as "following" the conversation. */
const FOLLOW_PX = 80;

/** The room pane. */
export class RoomView {
  /**
   * @param {object} deps `{store, realtime, api, names, me, roomOf}`; `names.nameOf(id)` gives a
   *   display name and `names.onResolved` re-renders when one arrives; `roomOf(chatId)` is the
   *   chat's room in the client library.
   */
  constructor(deps) {
    Object.assign(this, deps);
    this.chatId = null;
    /** Sends the server refused for good, by `client_msg_id`: `{chatId, content, error}`. */
    this.failed = new Map();
    this.lastTypingSent = 0;
    this.typingTimer = null;
    this.list = $('message-list');
    this.scroller = $('message-scroller');
    this.input = $('composer-input');
    this.bindComposer();
    $('load-earlier').addEventListener('click', () => this.loadEarlier());
  }

  get state() { return this.chatId ? this.store.get(this.chatId) : null; }

  /** Shows a chat (its history is fetched by the app). */
  open(chatId) {
    if (this.chatId !== chatId) {
      this.chatId = chatId;
      this.list.replaceChildren();
      this.notice('');
    }
    this.render({ scrollToEnd: true });
  }

  close() {
    this.chatId = null;
    this.list.replaceChildren();
  }

  notice(text) {
    const el = $('room-notice');
    el.textContent = text;
    el.hidden = !text;
  }

  bindComposer() {
    const form = $('composer');
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.send();
    });
    $('ask-ai-button').addEventListener('click', () => this.prompt());
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.send();
      }
    });
    this.input.addEventListener('input', () => {
      const now = Date.now();
      if (this.chatId && this.input.value.trim() && now - this.lastTypingSent > TYPING_SEND_MS) {
        this.lastTypingSent = now;
        this.roomOf(this.chatId).typing();
      }
    });
  }

  /** Posts through the library's outbox: shown at once as pending, until it is stored. */
  send() {
    const content = this.input.value.trim();
    if (!content || !this.chatId) return;
    this.input.value = '';
    this.lastTypingSent = 0;
    this.transmit(this.chatId, content);
    this.render({ scrollToEnd: true });
  }

  /**
   * @param {string} chatId
   * @param {string} content
   * @param {string} [clientMsgId] the same id again when retrying a refused send
   */
  transmit(chatId, content, clientMsgId) {
    this.roomOf(chatId).send(content, { clientMsgId }).then(() => {
      if (this.chatId === chatId) this.render();
    }).catch(() => {
      // Refused for good: `sendFailed` shows it with a Retry button.
    });
  }

  /** The server refused a send (invalid content, no longer a member, …). */
  sendFailed(entry, error) {
    this.failed.set(entry.client_msg_id, { chatId: entry.chat_id, content: entry.content, error: error.message });
    if (this.chatId === entry.chat_id) this.render();
  }

  retry(clientMsgId) {
    const entry = this.failed.get(clientMsgId);
    if (!entry) return;
    this.failed.delete(clientMsgId);
    this.transmit(entry.chatId, entry.content, clientMsgId);
    this.render();
  }

  /** `prompt`: the message is stored like `send`, then the AI reply streams to the room. */
  prompt() {
    const content = this.input.value.trim();
    if (!content || !this.chatId) return;
    if (this.realtime.state !== 'online') {
      this.notice('Not connected: the question was not sent. It is still in the box; try again once online.');
      return;
    }
    this.input.value = '';
    this.notice('');
    this.roomOf(this.chatId).prompt(content).catch((e) => {
      if (!this.input.value) this.input.value = content;
      this.notice(`The question was not sent: ${e.message}`);
    });
  }

  cancel(generationId, button) {
    button.disabled = true;
    button.textContent = 'Stopping…';
    this.realtime.cancel(generationId).catch((e) => {
      button.disabled = false;
      button.textContent = 'Stop';
      this.notice(`Could not stop the reply: ${e.message}`);
    });
  }

  async loadEarlier() {
    const state = this.state;
    if (!state || !state.oldestLoaded || state.oldestLoaded <= 1) return;
    const button = $('load-earlier');
    button.disabled = true;
    const before = this.scroller.scrollHeight;
    try {
      const page = await this.api.messages(state.chat.id, { before_seq: state.oldestLoaded, limit: 50 });
      for (const m of page) state.add(m);
      if (!page.length) state.oldestLoaded = 1;
      this.render();
      this.scroller.scrollTop += this.scroller.scrollHeight - before;
    } catch (e) {
      this.notice(`Could not load earlier messages: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  authorOf(m) {
    if (m.role === 'assistant' || m.is_from_ai) return 'Echo AI';
    if (m.role === 'system') return 'System';
    if (!m.user_id) return 'Unknown';
    if (m.user_id === this.me.id) return 'You';
    return this.names.nameOf(m.user_id);
  }

  /** Everything to show, in order: stored messages, unsent ones, replies being generated. */
  items(state) {
    const items = [];
    for (const m of state.ordered()) {
      items.push({ key: `id:${m.id}`, kind: 'message', m });
    }
    for (const entry of this.realtime.pendingSends(state.chat.id)) {
      if (entry.message_id && state.ids.has(entry.message_id)) continue;
      items.push({ key: `out:${entry.client_msg_id}`, kind: 'pending', entry: { content: entry.content, error: null } });
    }
    for (const [clientMsgId, entry] of this.failed) {
      if (entry.chatId !== state.chat.id) continue;
      items.push({ key: `out:${clientMsgId}`, kind: 'pending', entry });
    }
    for (const g of state.generations.values()) {
      if (g.messageId && state.ids.has(g.messageId)) continue;
      items.push({ key: g.messageId ? `id:${g.messageId}` : `gen:${g.generationId}`, kind: 'generation', g });
    }
    return items;
  }

  /** Re-renders the room; elements are reused by key so a streaming reply grows in place. */
  render({ scrollToEnd = false } = {}) {
    const state = this.state;
    if (!state) return;
    $('room-title').textContent = state.chat.title;
    const follow = scrollToEnd
      || this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < FOLLOW_PX;
    const existing = new Map([...this.list.children].map((li) => [li.dataset.key, li]));
    this.items(state).forEach((item, i) => {
      let li = existing.get(item.key);
      existing.delete(item.key);
      if (!li) li = this.createItem(item);
      this.updateItem(li, item, state);
      if (this.list.children[i] !== li) this.list.insertBefore(li, this.list.children[i] || null);
    });
    for (const li of existing.values()) li.remove();
    $('load-earlier').hidden = !(state.oldestLoaded && state.oldestLoaded > 1);
    this.renderPresence(state);
    this.renderTyping(state);
    if (follow) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  createItem(item) {
    const li = h('li', { class: 'message', dataset: { key: item.key } },
      h('div', { class: 'meta' },
        h('span', { class: 'author' }),
        h('time', { class: 'time' }),
        h('span', { class: 'status' })),
      h('div', { class: 'body' }),
      h('div', { class: 'actions' }));
    return li;
  }

  updateItem(li, item, state) {
    const author = li.querySelector('.author');
    const time = li.querySelector('.time');
    const status = li.querySelector('.status');
    const body = li.querySelector('.body');
    const actions = li.querySelector('.actions');
    let text = '';
    let statusText = '';
    let classes = 'message';
    let action = null;
    if (item.kind === 'message') {
      const { m } = item;
      const mine = m.user_id === this.me.id && m.role === 'user';
      const ai = m.role === 'assistant' || m.is_from_ai;
      classes += ai ? ' assistant' : mine ? ' mine' : ' theirs';
      author.textContent = this.authorOf(m);
      time.textContent = formatTime(m.created_at);
      time.dateTime = m.created_at;
      text = m.content;
      const reason = state.finishReasons?.get(m.id);
      if (reason === 'cancelled') statusText = 'stopped';
      else if (reason === 'length') statusText = 'cut at the length limit';
      else if (reason === 'error') statusText = 'incomplete (error)';
      li.dataset.seq = String(m.seq);
      li.dataset.messageId = m.id;
      delete li.dataset.generationId;
      delete li.dataset.clientMsgId;
    } else if (item.kind === 'pending') {
      const { entry } = item;
      classes += ' mine pending';
      author.textContent = 'You';
      time.textContent = '';
      text = entry.content;
      statusText = entry.error ? `not sent: ${entry.error}` : 'sending…';
      if (entry.error) {
        const id = item.key.slice(4);
        action = h('button', { type: 'button', class: 'secondary small', onclick: () => this.retry(id) }, 'Retry');
      }
      li.dataset.clientMsgId = item.key.slice(4);
    } else {
      const { g } = item;
      classes += ' assistant';
      if (g.status === 'streaming') classes += ' streaming';
      author.textContent = 'Echo AI';
      time.textContent = '';
      text = g.text;
      if (g.status === 'streaming') {
        statusText = g.text ? 'writing…' : 'thinking…';
        action = h('button', {
          type: 'button',
          class: 'secondary small stop',
          'aria-label': 'Stop the AI reply',
          onclick: (e) => this.cancel(g.generationId, e.currentTarget),
        }, 'Stop');
      } else if (g.status === 'failed') {
        statusText = `failed: ${g.error || 'unknown error'}`;
      } else {
        statusText = 'finishing…';
      }
      li.dataset.generationId = g.generationId;
    }
    if (li.className !== classes) li.className = classes;
    // Screen readers announce a reply once it is complete, not at every token.
    if (classes.includes('streaming')) li.setAttribute('aria-busy', 'true');
    else li.removeAttribute('aria-busy');
    if (body.textContent !== text) body.textContent = text;
    if (status.textContent !== statusText) status.textContent = statusText;
    const hadStop = actions.querySelector('.stop');
    if (action && action.classList.contains('stop') && hadStop) return; // keep focus on Stop
    actions.replaceChildren(...(action ? [action] : []));
  }

  /** Appends a token's text to its bubble without re-rendering the room. */
  growGeneration(state, g) {
    if (state.chat.id !== this.chatId) return;
    const key = g.messageId ? `id:${g.messageId}` : `gen:${g.generationId}`;
    const li = [...this.list.children].find((el) => el.dataset.key === key);
    if (!li) {
      this.render();
      return;
    }
    const follow = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < FOLLOW_PX;
    this.updateItem(li, { key, kind: 'generation', g }, state);
    if (follow) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  renderPresence(state) {
    const ul = $('presence-list');
    if (!state.subscribed) {
      ul.replaceChildren(h('li', { class: 'presence-unknown', text: 'unknown while not connected' }));
      return;
    }
    const ids = [...state.online].sort((a, b) => (a === this.me.id ? -1 : b === this.me.id ? 1 : 0));
    ul.replaceChildren(...ids.map((id) => h('li', { class: 'presence-user', dataset: { userId: id } },
      h('span', { class: 'dot', 'aria-hidden': 'true' }),
      id === this.me.id ? `${this.names.nameOf(id)} (you)` : this.names.nameOf(id))));
  }

  renderTyping(state) {
    const now = Date.now();
    const who = [];
    let next = Infinity;
    for (const [id, until] of state.typing) {
      if (until <= now || id === this.me.id) {
        state.typing.delete(id);
        continue;
      }
      who.push(this.names.nameOf(id));
      next = Math.min(next, until);
    }
    const el = $('typing');
    const text = who.length === 0 ? ''
      : who.length === 1 ? `${who[0]} is typing…`
        : `${who.slice(0, -1).join(', ')} and ${who.at(-1)} are typing…`;
    if (el.textContent !== text) el.textContent = text;
    clearTimeout(this.typingTimer);
    if (Number.isFinite(next)) {
      this.typingTimer = setTimeout(() => this.state && this.renderTyping(this.state), next - now + 20);
    }
  }

  /** Someone typed in a chat. */
  typing(state, userId) {
    state.typing.set(userId, Date.now() + TYPING_SHOWN_MS);
    if (state.chat.id === this.chatId) this.renderTyping(state);
  }
}
