/* Vouch sandbox page: messages, ephemerals, threads, the sidebar and the channel pane. */
"use strict";

function messageHtml(m, channel, opts = {}) {
  const author = m.user;
  const bot = S.state.users[author] && S.state.users[author].is_bot;
  const name = userLabel(author);
  const ctx = {kind: channel.kind, channel: channel.id, ts: m.ts, certificate: m.certificate};
  const key = `${channel.id}/${m.ts}/${(m.edited || {}).ts || ""}`;
  const fresh = S.known.size && !S.known.has(key) ? " fresh" : "";
  S.known.add(key);
  let replies = "";
  if (!opts.inThread && m.replies && m.replies.length) {
    const n = m.replies.length;
    const last = m.replies[n - 1];
    replies = `<button type="button" class="replies-link" data-thread="${esc(m.ts)}" data-testid="replies-link">`
      + `${n} ${n === 1 ? "reply" : "replies"} <span class="last">Last reply ${esc(fmtTime(parseFloat(last.ts)))}</span></button>`;
  }
  const active = S.thread && S.thread.ts === m.ts && !opts.inThread ? " thread-active" : "";
  return `<div class="msg${fresh}${active}" data-testid="message" data-ts="${esc(m.ts)}" data-channel="${esc(channel.id)}">`
    + `<div class="avatar" style="background:${bot ? "var(--aubergine)" : colorFor(author)}">${esc(name.charAt(0).toUpperCase())}</div>`
    + `<div class="msg-body"><div class="msg-head"><span class="author">${esc(name)}</span>`
    + (bot ? `<span class="app-badge">APP</span>` : "")
    + `<span class="time" title="${esc(new Date(parseFloat(m.ts) * 1000).toLocaleString())}">${esc(fmtTime(parseFloat(m.ts)))}</span>`
    + (m.edited ? `<span class="edited">(edited)</span>` : "")
    + `</div>${contentHtml(m, ctx)}${replies}</div></div>`;
}

const EYE = `<svg class="eye" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">`
  + `<path d="M1 8s2.6-5 7-5 7 5 7 5-2.6 5-7 5-7-5-7-5z" fill="none" stroke="currentColor" stroke-width="1.4"/>`
  + `<circle cx="8" cy="8" r="2.2" fill="currentColor"/></svg>`;

function ephemeralHtml(e, channel) {
  const ctx = {kind: channel.kind, channel: channel.id, ts: "", ephemeral: true};
  return `<div class="msg ephemeral" data-testid="ephemeral" data-id="${esc(e.id)}">`
    + `<div class="avatar">V</div><div class="msg-body">`
    + `<div class="eph-label">${EYE}<span>Only visible to you</span>`
    + `<button type="button" class="dismiss" data-dismiss="${esc(e.id)}">Dismiss</button></div>`
    + `<div class="msg-head"><span class="author">Vouch</span><span class="app-badge">APP</span>`
    + `<span class="time">${esc(fmtTime(e.at))}</span></div>`
    + contentHtml(e, ctx) + `</div></div>`;
}

function itemsFor(channel) {
  const items = channel.messages.map((m) => ({t: parseFloat(m.ts), m}));
  for (const e of S.state.ephemerals) {
    if (e.channel === channel.id && !e.thread_ts && !S.dismissed.has(e.id)) items.push({t: e.at, e});
  }
  items.sort((a, b) => a.t - b.t);
  return items;
}

function renderList(container, items, channel, opts = {}) {
  const scroller = opts.scroller || container;
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
  if (!items.length) {
    container.innerHTML = opts.empty || "";
    return;
  }
  let html = "";
  let day = "";
  for (const it of items) {
    const d = fmtDay(it.t);
    if (d !== day && !opts.inThread) { html += `<div class="day"><span>${esc(d)}</span></div>`; day = d; }
    html += it.m ? messageHtml(it.m, channel, opts) : ephemeralHtml(it.e, channel);
  }
  container.innerHTML = html;
  if (atBottom || opts.forceBottom) scroller.scrollTop = scroller.scrollHeight;
}

/* ---------------------------------------------------------------------------------------- */
/* page parts                                                                               */

function currentChannel() {
  if (!S.state) return null;
  if (S.wantDm) {
    const dm = dmChannel();
    if (dm) { S.channel = dm.id; S.wantDm = false; }
  }
  let ch = channelById(S.channel);
  if (!ch) { ch = S.state.channels[0]; S.channel = ch ? ch.id : ""; }
  return ch;
}

function countFor(channel) {
  let n = channel.messages.length;
  for (const e of S.state.ephemerals) if (e.channel === channel.id && !e.thread_ts) n += 1;
  return n;
}

function renderSidebar() {
  const ch = currentChannel();
  const seen = S.seen[S.user] || (S.seen[S.user] = {});
  if (ch) seen[ch.id] = countFor(ch);
  const item = (c) => {
    const unread = countFor(c) - (seen[c.id] || 0);
    const cls = `side-item${c.id === S.channel && !S.home ? " active" : ""}${unread > 0 ? " unread" : ""}`;
    const icon = c.kind === "dm" ? `<span class="app-dot">V</span>` : `<span class="hash">#</span>`;
    const testid = c.kind === "dm" ? "dm-vouch" : `channel-${c.id}`;
    const badge = unread > 0 && c.kind === "dm" ? `<span class="badge">${unread}</span>` : "";
    return `<li class="${cls}" data-channel="${esc(c.id)}" data-testid="${testid}">${icon}<span>${esc(c.name)}</span>${badge}</li>`;
  };
  const key = JSON.stringify([S.channel, S.home, S.state.channels.map((c) => [c.id, c.name, countFor(c) - (seen[c.id] || 0)])]);
  if (key === S.keys.sidebar) return;
  S.keys.sidebar = key;
  $("#channel-list").innerHTML = S.state.channels.filter((c) => c.kind === "channel").map(item).join("");
  // The App Home is there before any DM is: Slack lists the app as soon as it is installed.
  const home = `<li class="side-item${S.home ? " active" : ""}" data-home-tab="1" data-testid="home-vouch">`
    + `<span class="app-dot">V</span><span>Vouch Home</span></li>`;
  $("#dm-list").innerHTML = home + S.state.channels.filter((c) => c.kind === "dm").map(item).join("");
}

const TOPICS = {
  C0REQUESTS: "Vouch posts access requests here; approvers vote with the buttons",
  C0SECURITY: "Break-glass alerts; admins review them here",
  C0GENERAL: "Anything else — slash commands work in every channel",
};

function renderMain() {
  if (S.home) { renderHome(); return; }
  const ch = currentChannel();
  if (!ch) return;
  const items = itemsFor(ch);
  const key = JSON.stringify([S.user, ch.id, items.map((i) => i.m || i.e), S.thread]);
  $("#channel-title").textContent = ch.kind === "dm" ? "Vouch" : `# ${ch.name}`;
  $("#channel-topic").textContent = ch.kind === "dm"
    ? "Your direct messages with the Vouch app: certificates and reminders arrive here" : (TOPICS[ch.id] || "");
  if (key === S.keys.main) return;
  const switched = !S.keys.main || JSON.parse(S.keys.main)[1] !== ch.id || JSON.parse(S.keys.main)[0] !== S.user;
  S.keys.main = key;
  const empty = ch.kind === "dm"
    ? `<div class="empty">No messages from Vouch yet. Certificates you are granted arrive here.</div>`
    : `<div class="empty">Nothing in #${esc(ch.name)} yet.</div>`;
  renderList($("#message-list"), items, ch, {empty, forceBottom: switched, scroller: $("#messages")});
}

function renderThread() {
  const pane = $("#thread");
  if (!S.thread) { pane.hidden = true; S.keys.thread = ""; return; }
  const ch = channelById(S.thread.channel);
  const parent = ch && ch.messages.find((m) => m.ts === S.thread.ts);
  if (!parent) { S.thread = null; pane.hidden = true; return; }
  pane.hidden = false;
  const eph = S.state.ephemerals.filter((e) => e.channel === ch.id && e.thread_ts === parent.ts && !S.dismissed.has(e.id));
  const key = JSON.stringify([S.user, parent, eph]);
  if (key === S.keys.thread) return;
  const switched = !S.keys.thread;
  S.keys.thread = key;
  $("#thread-where").textContent = ch.kind === "dm" ? "Vouch" : `#${ch.name}`;
  const box = $("#thread-messages");
  const items = parent.replies.map((m) => ({t: parseFloat(m.ts), m}))
    .concat(eph.map((e) => ({t: e.at, e}))).sort((a, b) => a.t - b.t);
  const n = parent.replies.length;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  box.innerHTML = `<div class="thread-parent">${messageHtml(parent, ch, {inThread: true})}</div>`
    + `<div class="thread-count">${n} ${n === 1 ? "reply" : "replies"}</div><div id="thread-replies"></div>`;
  const list = $("#thread-replies");
  let html = "";
  for (const it of items) html += it.m ? messageHtml(it.m, ch, {inThread: true}) : ephemeralHtml(it.e, ch);
  list.innerHTML = html;
  if (switched || atBottom) box.scrollTop = box.scrollHeight;
}

function render() {
  if (!S.state) return;
  renderSidebar();
  renderThread();  // first: opening the pane narrows the main one, which changes its scroll height
  renderMain();
  renderModal();
  $("#composer").hidden = S.home;  // Slack's Home tab has no message box
}
