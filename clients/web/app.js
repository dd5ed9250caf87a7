// The wsbroker live demo: a chat over the broker that served this page.
// Rooms are topics `chat.<room>`; the side panel watches `chat.>`.
// Every piece of text from the network is rendered with textContent.
import { connect } from './wsbroker.js';

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  stateText: $('state-text'),
  reconnects: $('reconnects'),
  latency: $('latency'),
  queued: $('queued'),
  server: $('server'),
  joinForm: $('join-form'),
  nick: $('nick'),
  room: $('room'),
  roomTitle: $('room-title'),
  roomTopic: $('room-topic'),
  messages: $('messages'),
  sendForm: $('send-form'),
  text: $('text'),
  send: $('send'),
  roomList: $('room-list'),
  activity: $('activity'),
};

const MAX_MESSAGES = 500;
const MAX_ACTIVITY = 40;
const STATE_LABELS = {
  connecting: 'connecting…',
  open: 'connected',
  reconnecting: 'reconnecting…',
  closed: 'closed',
};

const params = new URLSearchParams(location.search);
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const client = connect(wsUrl, {
  token: params.get('token') || undefined,
  pingInterval: 10000,
  pingTimeout: 5000,
  reconnect: { initialDelay: 300, maxDelay: 8000 },
});

let me = null; // {nick, room, topic, sub}
const rooms = new Map(); // room -> {count, unread, nick, text, ts}

// ---- connection status ----

function showState(state) {
  ui.status.dataset.state = state;
  ui.stateText.textContent = STATE_LABELS[state] || state;
  ui.reconnects.textContent = String(client.reconnects);
  ui.send.disabled = !me;
}

client.on('statechange', ({ state }) => showState(state));
client.on('open', ({ hello, reconnects }) => {
  ui.server.textContent = hello && hello.server ? hello.server : '–';
  if (reconnects > 0 && me) systemLine(`Reconnected (reconnect #${reconnects}).`);
  refreshLatency();
  updateQueued();
});
client.on('reconnecting', ({ attempt, delay }) => {
  ui.latency.textContent = '–';
  if (attempt === 1 && me) systemLine('Connection lost; reconnecting…', 'warn');
  ui.stateText.textContent = `reconnecting in ${(delay / 1000).toFixed(1)} s`;
});
client.on('stale', ({ topic }) => {
  if (me && topic === me.topic) {
    systemLine('Messages sent while you were offline may be missing: the broker could not replay them.', 'warn');
  }
});
client.on('error', ({ code, message, topic }) => {
  systemLine(`Broker error ${code}${topic ? ` on ${topic}` : ''}: ${message}`, 'error');
});
showState(client.state);

async function refreshLatency() {
  if (client.state !== 'open') return;
  try {
    const rtt = await client.ping();
    ui.latency.textContent = `${rtt < 10 ? rtt.toFixed(1) : Math.round(rtt)} ms`;
  } catch (e) {
    ui.latency.textContent = '–';
  }
}
setInterval(refreshLatency, 5000);

function updateQueued() {
  ui.queued.textContent = String(client.queued);
}

// ---- helpers ----

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function hue(s) {
  let h = 0;
  for (const ch of s) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function clock(ts) {
  const d = new Date(typeof ts === 'number' ? ts : Date.now());
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function cleanRoom(s) {
  return s.trim().toLowerCase().replace(/[^a-z0-9_-]/g, '').slice(0, 32);
}

/** Chat payloads are {kind, nick, text, ts}; anything else is shown as JSON. */
function normalise(data) {
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    return {
      kind: data.kind === 'join' ? 'join' : 'msg',
      nick: typeof data.nick === 'string' && data.nick ? data.nick.slice(0, 24) : 'anonymous',
      text: typeof data.text === 'string' ? data.text : '',
      ts: typeof data.ts === 'number' ? data.ts : Date.now(),
    };
  }
  return { kind: 'msg', nick: 'raw', text: JSON.stringify(data), ts: Date.now() };
}

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

function append(li) {
  const stick = nearBottom(ui.messages);
  const hint = $('empty-hint');
  if (hint) hint.remove();
  ui.messages.append(li);
  while (ui.messages.children.length > MAX_MESSAGES) ui.messages.firstElementChild.remove();
  if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function systemLine(text, level = 'info') {
  const li = el('li', `system ${level}`);
  li.append(el('span', 'time', clock()), el('span', 'body', text));
  append(li);
}

// ---- the room ----

function onRoomMessage(data, { seq }) {
  const m = normalise(data);
  if (m.kind === 'join') {
    const li = el('li', 'system join');
    li.append(el('span', 'time', clock(m.ts)), el('span', 'body', `${m.nick} joined the room`));
    append(li);
    return;
  }
  const li = el('li', m.nick === me.nick ? 'msg mine' : 'msg');
  li.dataset.seq = String(seq);
  const avatar = el('span', 'avatar', [...m.nick][0].toUpperCase());
  avatar.style.setProperty('--h', String(hue(m.nick)));
  const bubble = el('div', 'bubble');
  const meta = el('div', 'meta');
  meta.append(el('span', 'nick', m.nick), el('span', 'time', clock(m.ts)));
  bubble.append(meta, el('p', 'text', m.text));
  li.append(avatar, bubble);
  append(li);
}

function join(nick, room) {
  const topic = `chat.${room}`;
  if (me && me.topic === topic && me.nick === nick) return;
  if (me) me.sub.unsubscribe();
  ui.messages.replaceChildren();
  const sub = client.subscribe(topic, onRoomMessage, { last: 50 });
  me = { nick, room, topic, sub };
  const seen = rooms.get(room);
  if (seen) seen.unread = 0;
  ui.roomTitle.textContent = `#${room}`;
  ui.roomTopic.textContent = topic;
  ui.text.disabled = false;
  ui.send.disabled = false;
  ui.text.placeholder = `Message #${room} as ${nick}`;
  try {
    localStorage.setItem('wsbroker.nick', nick);
  } catch (e) {
    // storage may be disabled; the nickname is just not remembered
  }
  history.replaceState(null, '', `${location.pathname}${location.search}#${room}`);
  renderRooms();
  sub.ready
    .then(() => client.publish(topic, { kind: 'join', nick, ts: Date.now() }))
    .catch(() => {}); // subscription errors are shown through the `error` event
  ui.text.focus();
}

ui.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const nick = ui.nick.value.trim().slice(0, 24);
  const room = cleanRoom(ui.room.value);
  if (!nick) {
    ui.nick.focus();
    return;
  }
  if (!room) {
    ui.room.value = '';
    ui.room.focus();
    return;
  }
  ui.nick.value = nick;
  ui.room.value = room;
  join(nick, room);
});

ui.sendForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !me) return;
  ui.text.value = '';
  const { topic, nick } = me;
  const sent = client.publish(topic, { kind: 'msg', nick, text, ts: Date.now() });
  updateQueued();
  sent
    .catch((err) => systemLine(`Not sent (${err.code}): “${text}” — ${err.message}`, 'error'))
    .finally(updateQueued);
});

// ---- all rooms, through the wildcard subscription ----

function renderRooms() {
  const list = [...rooms.entries()].sort((a, b) => b[1].ts - a[1].ts);
  if (list.length === 0) {
    ui.roomList.replaceChildren(el('li', 'empty', 'No activity yet.'));
    return;
  }
  ui.roomList.replaceChildren(
    ...list.map(([room, r]) => {
      const li = el('li');
      li.dataset.room = room;
      if (me && me.room === room) li.classList.add('current');
      const btn = el('button', 'room');
      btn.type = 'button';
      btn.title = `Switch to #${room}`;
      const top = el('div', 'row');
      top.append(el('span', 'name', `#${room}`), el('span', 'count', `${r.count} msg${r.count === 1 ? '' : 's'}`));
      if (r.unread > 0) top.append(el('span', 'badge', String(r.unread)));
      const last = el('div', 'last', r.text ? `${r.nick}: ${r.text}` : `${r.nick} joined`);
      btn.append(top, last);
      btn.addEventListener('click', () => {
        ui.room.value = room;
        const nick = ui.nick.value.trim().slice(0, 24);
        if (nick) join(nick, room);
        else ui.nick.focus();
      });
      li.append(btn);
      return li;
    }),
  );
}

function onAnyRoom(data, { topic }) {
  const room = topic.slice('chat.'.length);
  const m = normalise(data);
  const r = rooms.get(room) || { count: 0, unread: 0, nick: '', text: '', ts: 0 };
  if (m.kind === 'msg') {
    r.count += 1;
    if (!me || me.room !== room) r.unread += 1;
  }
  r.nick = m.nick;
  r.text = m.kind === 'msg' ? m.text : '';
  r.ts = Date.now();
  rooms.set(room, r);
  renderRooms();

  const li = el('li');
  li.dataset.room = room;
  li.append(
    el('span', 'time', clock()),
    el('span', 'where', `#${room}`),
    el('span', 'what', m.kind === 'msg' ? `${m.nick}: ${m.text}` : `${m.nick} joined`),
  );
  ui.activity.prepend(li);
  while (ui.activity.children.length > MAX_ACTIVITY) ui.activity.lastElementChild.remove();
}

client.subscribe('chat.>', onAnyRoom);

// ---- start ----

try {
  ui.nick.value = params.get('nick') || localStorage.getItem('wsbroker.nick') || '';
} catch (e) {
  ui.nick.value = params.get('nick') || '';
}
ui.room.value = cleanRoom(decodeURIComponent(location.hash.slice(1))) || params.get('room') || 'lobby';
(ui.nick.value ? ui.text : ui.nick).focus();
