/* Vouch sandbox page: renders the fake Slack workspace and turns clicks and slash commands into
 * the signed requests Slack would send (through the sandbox's /api). Plain JS, no build step. */
"use strict";

const POLL_MS = 700;
const S = {
  info: null,              // /api/info: demo users, demo key, targets
  state: null,             // /api/state for the current user
  user: localStorage.getItem("vouch.user") || "U0ALICE",
  channel: localStorage.getItem("vouch.channel") || "C0REQUESTS",
  wantDm: localStorage.getItem("vouch.channel") === "@dm",
  thread: null,            // {channel, ts} of the open thread
  seen: {},                // user -> channel -> number of items seen
  dismissed: new Set(),    // ephemeral ids dismissed
  lastJson: "",
  keys: {},                // what was last rendered, per part
  modalKey: "",
  known: new Set(),        // message keys rendered before (to highlight new ones)
  busy: false,
};

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */

function esc(s) {
  return String(s ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}
function unent(s) { return String(s ?? "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&"); }

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = {ok: false, error: `HTTP ${r.status}`}; }
  if (!r.ok && data && data.ok !== false) data.ok = false;
  return data;
}

let toastTimer = null;
function toast(text, error = false) {
  const t = $("#toast");
  t.textContent = text;
  t.className = error ? "error" : "";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, error ? 5000 : 2200);
}

async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch (e) { /* fall back below */ }
  const ta = document.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.style.position = "fixed";
  ta.style.opacity = "0";
  document.body.appendChild(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  ta.remove();
  return ok;
}

function flashButton(btn, text) {
  const old = btn.dataset.label || btn.textContent;
  btn.dataset.label = old;
  btn.textContent = text;
  setTimeout(() => { btn.textContent = old; }, 1600);
}

const COLORS = ["#2a80b9", "#8e44ad", "#16a085", "#d35400", "#c0392b", "#2c3e50", "#7f8c8d"];
function colorFor(id) {
  let h = 0;
  for (const c of String(id)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

function fmtTime(seconds) {
  const d = new Date(seconds * 1000);
  return d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
}
function fmtDay(seconds) {
  const d = new Date(seconds * 1000);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return "Today";
  return d.toLocaleDateString([], {weekday: "long", month: "long", day: "numeric"});
}

function userName(id) {
  const u = S.state && S.state.users[id];
  return u ? u.name : id;
}
function userLabel(id) {
  const u = S.state && S.state.users[id];
  if (!u) return id;
  return u.is_bot ? "Vouch" : (u.real_name || u.name);
}
function channelById(id) {
  return S.state ? S.state.channels.find((c) => c.id === id) : null;
}
function dmChannel() {
  return S.state ? S.state.channels.find((c) => c.kind === "dm") : null;
}

/* ---------------------------------------------------------------------------------------- */
/* mrkdwn                                                                                   */

const CERT_RE = /^((?:ssh|ecdsa|sk)-[a-z0-9@.-]*-cert-v01@openssh\.com) [A-Za-z0-9+/=]+/;

function renderToken(inner) {
  // inner: what was between < and >, raw (not entity-decoded)
  const [target, label] = splitLabel(inner);
  if (/^@[UW][A-Z0-9]+$/.test(target)) {
    const id = target.slice(1);
    const me = id === S.user ? " me" : "";
    return `<span class="mention${me}" data-user="${esc(id)}">@${esc(label || userName(id))}</span>`;
  }
  if (/^#[CGD][A-Z0-9]+$/.test(target)) {
    const id = target.slice(1);
    const ch = channelById(id);
    const name = label || (ch ? ch.name : id);
    return `<span class="channel-link" data-goto="${esc(id)}">#${esc(name)}</span>`;
  }
  if (target.startsWith("!subteam^")) {
    return `<span class="mention">${esc(label || "@" + target.slice(9))}</span>`;
  }
  if (target.startsWith("!date^")) {
    const epoch = parseInt(target.split("^")[1], 10);
    const local = isNaN(epoch) ? "" : new Date(epoch * 1000).toLocaleString();
    return `<span class="date" title="${esc(local)} (your time)">${esc(unent(label || local))}</span>`;
  }
  if (target === "!here" || target === "!channel" || target === "!everyone") {
    return `<span class="mention">@${esc(target.slice(1))}</span>`;
  }
  if (/^(https?:|mailto:)/.test(target)) {
    return `<a href="${esc(unent(target))}" target="_blank" rel="noopener">${esc(unent(label || target))}</a>`;
  }
  return null;
}
function splitLabel(inner) {
  const i = inner.indexOf("|");
  return i < 0 ? [inner, ""] : [inner.slice(0, i), inner.slice(i + 1)];
}

// Inline formatting of one run of text (no ``` fences in it).
function inline(text) {
  const holds = [];
  const hold = (html) => `\u0001${holds.push(html) - 1}\u0002`;
  let s = text.replace(/`([^`\n]+)`/g, (_, code) => hold(`<code>${esc(unent(code))}</code>`));
  s = s.replace(/<([^<>\s][^<>]*)>/g, (whole, inner) => {
    const html = renderToken(inner);
    return html === null ? whole : hold(html);
  });
  s = esc(unent(s));
  s = s.replace(/(^|[^\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])/g, "$1<b>$2</b>");
  s = s.replace(/(^|[^\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])/g, "$1<i>$2</i>");
  s = s.replace(/(^|[^\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])/g, "$1<s>$2</s>");
  return s.replace(/\u0001(\d+)\u0002/g, (_, i) => holds[+i]);
}

function linesHtml(text) {
  const lines = text.split("\n");
  let html = "";
  let quote = [];
  let plain = [];
  const flushPlain = () => { if (plain.length) { html += plain.map(inline).join("<br>"); plain = []; } };
  const flushQuote = () => {
    if (quote.length) { html += `<blockquote>${quote.map(inline).join("<br>")}</blockquote>`; quote = []; }
  };
  for (const line of lines) {
    const m = line.match(/^(?:>|&gt;) ?(.*)$/);
    if (m) { flushPlain(); quote.push(m[1]); } else { flushQuote(); plain.push(line); }
  }
  flushPlain();
  flushQuote();
  return html;
}

function preHtml(raw, ctx) {
  const text = unent(raw.replace(/^\n/, "").replace(/\n$/, ""));
  const m = text.match(CERT_RE);
  if (m && ctx && ctx.kind === "dm") {
    const cert = ctx.certificate;
    const href = cert ? `/api/certificate/${encodeURIComponent(cert.serial)}.pub?user=${encodeURIComponent(S.user)}` : "";
    const file = cert ? cert.filename : "id_ed25519-cert.pub";
    const demo = S.info && S.info.demo_key;
    const forDemo = demo && cert && file === "demo_key-cert.pub";
    const hint = forDemo
      ? `<button type="button" class="btn" data-save-cert="${esc(cert.serial)}" data-testid="save-certificate" `
        + `title="Writes ${esc(demo.certificate_path)}">Save next to the demo key</button>`
      : `<span class="note">save it next to your key as <code>~/.ssh/${esc(file)}</code></span>`;
    return `<div class="cert" data-testid="certificate">`
      + `<pre data-testid="certificate-line">${esc(text)}</pre>`
      + `<div class="cert-actions">`
      + `<button type="button" class="btn green" data-copy="${esc(text)}" data-testid="copy-certificate">Copy</button>`
      + (href ? `<a class="btn" href="${href}" download="${esc(file)}" data-testid="download-certificate">Download</a>` : "")
      + `<button type="button" class="btn" data-open-hostsetup="1" data-testid="certificate-host-setup">Host set-up &amp; ssh line</button>`
      + hint + `</div></div>`;
  }
  return `<pre>${esc(text)}</pre>`;
}

function mrkdwn(text, ctx) {
  const parts = String(text ?? "").split("```");
  let html = "";
  parts.forEach((p, i) => {
    if (i % 2 === 1 && i < parts.length - 1) html += preHtml(p, ctx);
    else {
      let t = i % 2 === 1 ? "```" + p : p;
      if (i > 0) t = t.replace(/^\n/, "");                  // the line break after a closing fence
      if (i < parts.length - 1) t = t.replace(/\n$/, "");   // ...and before an opening one
      html += linesHtml(t);
    }
  });
  return `<div class="mrkdwn">${html}</div>`;
}

function textObj(obj, ctx) {
  if (!obj) return "";
  if (obj.type === "mrkdwn") return mrkdwn(obj.text, ctx);
  return `<div class="mrkdwn">${esc(obj.text).replace(/\n/g, "<br>")}</div>`;
}

/* ---------------------------------------------------------------------------------------- */
/* Block Kit                                                                                */

function buttonHtml(el, ctx) {
  const label = el.text ? el.text.text : "";
  const style = el.style === "primary" ? " primary" : el.style === "danger" ? " danger" : "";
  if (el.url) {
    return `<a class="bk-button${style}" href="${esc(el.url)}" target="_blank" rel="noopener">${esc(label)}</a>`;
  }
  return `<button type="button" class="bk-button${style}" data-testid="action-${esc(label)}"`
    + ` data-channel="${esc(ctx.channel)}" data-ts="${esc(ctx.ts)}" data-action-id="${esc(el.action_id || "")}"`
    + ` data-value="${esc(el.value || "")}" data-label="${esc(label)}"${ctx.ephemeral ? " disabled" : ""}>${esc(label)}</button>`;
}

function elementHtml(el, ctx) {
  if (!el) return "";
  if (el.type === "button") return buttonHtml(el, ctx);
  if (el.type === "image") return `<img src="${esc(el.image_url)}" alt="${esc(el.alt_text)}" width="20" height="20">`;
  if (el.type === "mrkdwn" || el.type === "plain_text") return textObj(el, ctx);
  return `<span class="edited">[${esc(el.type)}]</span>`;
}

function blockHtml(b, ctx) {
  switch (b.type) {
    case "section": {
      let inner = b.text ? textObj(b.text, ctx) : "";
      if (b.fields) inner += `<div class="bk-fields">${b.fields.map((f) => textObj(f, ctx)).join("")}</div>`;
      const acc = b.accessory ? `<div>${elementHtml(b.accessory, ctx)}</div>` : "";
      return `<div class="bk-section"><div class="mrkdwn">${inner}</div>${acc}</div>`;
    }
    case "context":
      return `<div class="bk-context">${(b.elements || []).map((e) => elementHtml(e, ctx)).join("")}</div>`;
    case "actions":
      return `<div class="bk-actions">${(b.elements || []).map((e) => elementHtml(e, ctx)).join("")}</div>`;
    case "header":
      return `<div class="bk-header">${esc(b.text ? b.text.text : "")}</div>`;
    case "divider":
      return `<hr class="bk-divider">`;
    case "image":
      return `<img src="${esc(b.image_url)}" alt="${esc(b.alt_text)}" style="max-width:360px">`;
    case "rich_text":
      return `<div class="mrkdwn">${esc(JSON.stringify(b))}</div>`;
    default:
      return `<div class="edited">[unsupported block ${esc(b.type)}]</div>`;
  }
}

function contentHtml(m, ctx) {
  const blocks = m.blocks || [];
  const html = blocks.length ? blocks.map((b) => blockHtml(b, ctx)).join("") : mrkdwn(m.text, ctx);
  return `<div class="blocks">${html}</div>`;
}

/* ---------------------------------------------------------------------------------------- */
/* messages                                                                                 */

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
    const cls = `side-item${c.id === S.channel ? " active" : ""}${unread > 0 ? " unread" : ""}`;
    const icon = c.kind === "dm" ? `<span class="app-dot">V</span>` : `<span class="hash">#</span>`;
    const testid = c.kind === "dm" ? "dm-vouch" : `channel-${c.id}`;
    const badge = unread > 0 && c.kind === "dm" ? `<span class="badge">${unread}</span>` : "";
    return `<li class="${cls}" data-channel="${esc(c.id)}" data-testid="${testid}">${icon}<span>${esc(c.name)}</span>${badge}</li>`;
  };
  const key = JSON.stringify([S.channel, S.state.channels.map((c) => [c.id, c.name, countFor(c) - (seen[c.id] || 0)])]);
  if (key === S.keys.sidebar) return;
  S.keys.sidebar = key;
  $("#channel-list").innerHTML = S.state.channels.filter((c) => c.kind === "channel").map(item).join("");
  $("#dm-list").innerHTML = S.state.channels.filter((c) => c.kind === "dm").map(item).join("");
}

const TOPICS = {
  C0REQUESTS: "Vouch posts access requests here; approvers vote with the buttons",
  C0SECURITY: "Break-glass alerts; admins review them here",
  C0GENERAL: "Anything else — slash commands work in every channel",
};

function renderMain() {
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
}

/* ---------------------------------------------------------------------------------------- */
/* modals (views.open)                                                                      */

function renderModal() {
  const view = S.state.modal;
  const backdrop = $("#modal-backdrop");
  if (!view) { backdrop.hidden = true; S.modalKey = ""; return; }
  const key = `${view.id}/${view.hash}`;
  if (key !== S.modalKey) {
    S.modalKey = key;
    const form = $("#modal");
    form.dataset.viewId = view.id;
    let body = "";
    for (const b of view.blocks || []) {
      if (b.type !== "input") { body += blockHtml(b, {kind: "modal", channel: "", ts: ""}); continue; }
      const el = b.element || {};
      const label = b.label ? b.label.text : b.block_id;
      const opt = b.optional ? ` <span class="optional">(optional)</span>` : "";
      const id = `f-${b.block_id}`;
      let control;
      if (el.type === "static_select") {
        const init = el.initial_option ? el.initial_option.value : "";
        const ph = el.placeholder ? el.placeholder.text : "Choose an option";
        control = `<select id="${esc(id)}" data-block-id="${esc(b.block_id)}" data-action-id="${esc(el.action_id)}" data-type="static_select">`
          + `<option value=""${init ? "" : " selected"}>${esc(ph)}</option>`
          + (el.options || []).map((o) => `<option value="${esc(o.value)}"${o.value === init ? " selected" : ""}>${esc(o.text.text)}</option>`).join("")
          + `</select>`;
      } else if (el.type === "plain_text_input") {
        const ph = el.placeholder ? ` placeholder="${esc(el.placeholder.text)}"` : "";
        const attrs = `id="${esc(id)}" data-block-id="${esc(b.block_id)}" data-action-id="${esc(el.action_id)}" data-type="plain_text_input"${ph}`;
        control = el.multiline ? `<textarea ${attrs}>${esc(el.initial_value || "")}</textarea>`
          : `<input ${attrs} value="${esc(el.initial_value || "")}">`;
      } else {
        control = `<div class="edited">[unsupported input ${esc(el.type)}]</div>`;
      }
      const hint = b.hint ? `<div class="hint">${esc(b.hint.text)}</div>` : "";
      body += `<div class="field" data-field="${esc(b.block_id)}"><label for="${esc(id)}">${esc(label)}${opt}</label>`
        + `${control}${hint}<div class="field-error" data-testid="error-${esc(b.block_id)}" hidden></div></div>`;
    }
    const title = view.title ? view.title.text : "";
    const submit = view.submit ? view.submit.text : "Submit";
    const close = view.close ? view.close.text : "Cancel";
    form.innerHTML = `<div class="dialog-head"><b>${esc(title)}</b>`
      + `<button type="button" class="icon-button" data-modal-close aria-label="Close">×</button></div>`
      + `<div class="dialog-body">${body}</div>`
      + `<div class="dialog-foot"><button type="button" class="secondary" data-modal-close data-testid="modal-cancel">${esc(close)}</button>`
      + (view.submit ? `<button type="submit" class="primary" data-testid="modal-submit">${esc(submit)}</button>` : "")
      + `</div>`;
    backdrop.hidden = false;
    const first = form.querySelector("select, input, textarea");
    if (first) first.focus();
  }
  showModalErrors(view.errors || {});
}

function showModalErrors(errors) {
  for (const field of $$("#modal .field")) {
    const msg = errors[field.dataset.field];
    const box = field.querySelector(".field-error");
    field.classList.toggle("invalid", !!msg);
    box.hidden = !msg;
    box.textContent = msg || "";
  }
}

async function submitModal(ev) {
  ev.preventDefault();
  const form = $("#modal");
  const values = {};
  for (const c of $$("[data-block-id]", form)) {
    const v = c.value;
    const entry = c.dataset.type === "static_select"
      ? {type: "static_select", selected_option: v ? {text: {type: "plain_text", text: c.options[c.selectedIndex].text}, value: v} : null}
      : {type: "plain_text_input", value: v === "" ? null : v};
    values[c.dataset.blockId] = {[c.dataset.actionId]: entry};
  }
  const btn = form.querySelector("[type=submit]");
  if (btn) btn.disabled = true;
  const res = await api("/api/view", {user: S.user, view_id: form.dataset.viewId, values});
  if (btn) btn.disabled = false;
  if (res.errors && Object.keys(res.errors).length) { showModalErrors(res.errors); return; }
  if (!res.ok) { toast(res.error || `the bot answered HTTP ${res.status}`, true); return; }
  $("#modal-backdrop").hidden = true;
  poll(true);
}

async function closeModal() {
  const form = $("#modal");
  $("#modal-backdrop").hidden = true;
  await api("/api/view/close", {user: S.user, view_id: form.dataset.viewId});
  poll(true);
}

/* ---------------------------------------------------------------------------------------- */
/* actions: buttons, slash commands                                                         */

async function clickButton(btn) {
  if (btn.disabled) return;
  btn.disabled = true;
  const res = await api("/api/click", {
    user: S.user, channel: btn.dataset.channel, ts: btn.dataset.ts, action_id: btn.dataset.actionId,
    value: btn.dataset.value, text: btn.dataset.label});
  if (!res.ok) toast(res.error || `the bot answered HTTP ${res.status}`, true);
  setTimeout(() => { btn.disabled = false; }, 600);
  poll(true);
}

async function sendCommand(text) {
  const input = $("#composer-input");
  const err = $("#composer-error");
  text = text.trim();
  if (!text || S.busy) return;
  S.busy = true;
  $("#composer-send").disabled = true;
  err.hidden = true;
  try {
    const ch = currentChannel();
    const res = await api("/api/command", {user: S.user, channel: ch ? ch.id : "C0GENERAL", text});
    if (res.ok) {
      input.value = "";
      hideSuggest();
    } else if (res.error) {
      err.textContent = res.error;
      err.hidden = false;
      const box = $("#messages");
      box.scrollTop = box.scrollHeight;
    }
  } catch (e) {
    err.textContent = "The sandbox is not answering: is `vouch sandbox` still running?";
    err.hidden = false;
  } finally {
    S.busy = false;
    $("#composer-send").disabled = false;
    input.focus();
    poll(true);
  }
}

const USAGE = {
  "/ssh-request": "<target> <duration> <reason…> — or alone for a form",
  "/ssh-breakglass": "<target> <duration> <reason…> — emergency, no approver",
  "/ssh-key": "add <public key> · list · remove <SHA256:…>",
  "/ssh-revoke": "<serial|request-id> [reason…]",
  "/ssh-status": "your pending requests and live certificates",
};
function showSuggest() {
  const input = $("#composer-input");
  const box = $("#composer-suggest");
  const v = input.value;
  if (!v.startsWith("/") || v.includes(" ")) { hideSuggest(); return; }
  const matches = Object.keys(USAGE).filter((c) => c.startsWith(v.toLowerCase()));
  if (!matches.length) { hideSuggest(); return; }
  box.innerHTML = matches.map((c) => `<div class="suggest" data-suggest="${esc(c)}"><b>${esc(c)}</b><span>${esc(USAGE[c])}</span></div>`).join("");
  box.hidden = false;
}
function hideSuggest() { $("#composer-suggest").hidden = true; }

function useCommand(text, send = false) {
  const input = $("#composer-input");
  input.value = text;
  hideSuggest();
  input.focus();
  if (send) sendCommand(text);
}

/* ---------------------------------------------------------------------------------------- */
/* how to try it, host set-up                                                               */

function renderHowto() {
  const info = S.info;
  const box = $("#howto");
  const key = info.demo_key;
  const add = key ? `/ssh-key add ${key.public}` : "/ssh-key add ssh-ed25519 AAAA…";
  const ask = "/ssh-request prod-db 1h checking replication lag";
  const breakglass = "/ssh-breakglass prod-db 30m database on fire";
  box.innerHTML = `<h2><span>How to try it</span><button type="button" class="icon-button" id="howto-close" aria-label="Hide">×</button></h2>`
    + `<ol>`
    + `<li>As <b>alice</b> (the requester), register the demo key — its private half is <code>${esc(key ? key.private_path : "~/.ssh/id_ed25519")}</code>:`
    + `<div class="keyline"><code data-testid="demo-key-command">${esc(add)}</code>`
    + `<button type="button" class="mini" data-use="${esc(add)}" data-as="U0ALICE" data-testid="use-demo-key">Insert</button></div></li>`
    + `<li>Ask for access: <code>${esc(ask)}</code> <button type="button" class="mini" data-use="${esc(ask)}" data-as="U0ALICE">Insert</button>`
    + ` — or type <code>/ssh-request</code> alone for the form.</li>`
    + `<li>Switch <b>You are</b> to <b>bob</b> or <b>carol</b> and click <b>Approve</b> in <span class="channel-link" data-goto="C0REQUESTS">#access-requests</span>. `
    + `(alice cannot approve her own request — try it.)</li>`
    + `<li>Back as <b>alice</b>, open the <b>Vouch</b> DM: copy or download the certificate, then `
    + `<button type="button" class="mini" data-open-hostsetup="1">Host set-up</button> shows how a host trusts the CA and the exact <code>ssh</code> line.</li>`
    + `</ol><div class="note">Break-glass: as <b>erin</b>, register a key too `
    + `<button type="button" class="mini" data-use="${esc(add)}" data-as="U0ERIN">Insert as erin</button>, then `
    + `<code>${esc(breakglass)}</code> <button type="button" class="mini" data-use="${esc(breakglass)}" data-as="U0ERIN">Insert</button>`
    + ` — no approver; <span class="channel-link" data-goto="C0SECURITY">#security</span> is alerted and <b>sec</b> marks it reviewed. `
    + `Everyone else is refused. The policy is <code>${esc(info.workdir)}/policy.yaml</code>.</div>`;
}

function toggleHowto(show) {
  const box = $("#howto");
  box.hidden = show === undefined ? !box.hidden : !show;
  localStorage.setItem("vouch.howto", box.hidden ? "hidden" : "shown");
  $("#howto-toggle").textContent = box.hidden ? "How to try it" : "Hide how-to";
  if (!box.hidden && show === undefined) $("#messages").scrollTop = 0;
}

async function openHostSetup(target) {
  const back = $("#hostsetup-backdrop");
  const body = $("#hostsetup-body");
  back.hidden = false;
  if (!target) body.textContent = "Loading…";
  const q = target ? `?target=${encodeURIComponent(target)}` : "";
  const res = await api(`/api/host-setup${q}`);
  if (res.ok === false) { body.textContent = res.error || "host set-up is unavailable"; return; }
  const key = S.info && S.info.demo_key;
  const options = res.targets.map((t) => `<option value="${esc(t)}"${t === res.target ? " selected" : ""}>${esc(t)}</option>`).join("");
  body.innerHTML = `<div class="setup-grid">`
    + `<div class="setup-block"><h3>1. On each host (as root) <span>target <select id="hostsetup-target" data-testid="host-setup-target">${options}</select></span>`
    + `<button type="button" class="btn" data-copy-from="hostsetup-text">Copy</button></h3>`
    + `<p>The output of <code>vouch host-setup --target ${esc(res.target || "")}</code>: trust the CA, fetch the KRL, map principals `
    + `(${esc(res.principals.join(", ") || "none")}), reload sshd. The KRL URL is this sandbox, so hosts reach it only while it runs.</p>`
    + `<pre id="hostsetup-text" data-testid="host-setup-text">${esc(res.text)}</pre></div>`
    + `<div class="setup-block"><h3>2. From your machine, with the certificate saved next to the key`
    + `<button type="button" class="btn" data-copy-from="hostsetup-ssh">Copy</button></h3>`
    + `<pre class="one" id="hostsetup-ssh" data-testid="host-setup-ssh">${esc(res.ssh)}</pre></div>`
    + (res.demo_ssh ? `<div class="setup-block"><h3>…or with the sandbox's demo key`
      + `<button type="button" class="btn" data-copy-from="hostsetup-demo-ssh">Copy</button></h3>`
      + `<p>In the Vouch DM, <b>Save next to the demo key</b> writes <code>${esc(key ? key.certificate_path : "")}</code>; then:</p>`
      + `<pre class="one" id="hostsetup-demo-ssh" data-testid="host-setup-demo-ssh">${esc(res.demo_ssh)}</pre></div>` : "")
    + `<div class="setup-block"><h3>CA public key (<code>TrustedUserCAKeys</code>)`
    + `<button type="button" class="btn" data-copy-from="hostsetup-ca">Copy</button></h3>`
    + `<pre class="one" id="hostsetup-ca">${esc(res.ca_line)} vouch-ca</pre></div>`
    + `</div>`;
}

/* ---------------------------------------------------------------------------------------- */
/* polling, user switch, events                                                             */

let pollTimer = null;
let polling = false;
let pollAgain = false;
async function poll(now = false) {
  if (polling) { if (now) pollAgain = true; return; }
  clearTimeout(pollTimer);
  polling = true;
  try {
    const user = S.user;
    const r = await fetch(`/api/state?user=${encodeURIComponent(user)}`, {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const txt = await r.text();
    setConn(true);
    if (user === S.user && txt !== S.lastJson) {
      S.lastJson = txt;
      S.state = JSON.parse(txt);
      render();
    }
  } catch (e) {
    setConn(false);
  } finally {
    polling = false;
    clearTimeout(pollTimer);
    pollTimer = setTimeout(() => poll(), pollAgain ? 0 : POLL_MS);
    pollAgain = false;
  }
}

function setConn(ok) {
  const c = $("#conn");
  c.className = `conn ${ok ? "ok" : "down"}`;
  c.textContent = ok ? "● connected to the sandbox" : "● sandbox not reachable";
}

function switchUser(id) {
  if (id === S.user) return;
  const ch = channelById(S.channel);
  S.wantDm = !!(ch && ch.kind === "dm");
  S.user = id;
  S.thread = null;
  S.keys = {};
  S.modalKey = "";
  S.lastJson = "";
  S.state = null;
  localStorage.setItem("vouch.user", id);
  $("#user-switch").value = id;
  $("#composer-error").hidden = true;
  $("#modal-backdrop").hidden = true;
  poll(true);
}

function goto(channelId) {
  S.channel = channelId;
  S.wantDm = false;
  const ch = channelById(channelId);
  localStorage.setItem("vouch.channel", ch && ch.kind === "dm" ? "@dm" : channelId);
  if (S.thread && S.thread.channel !== channelId) S.thread = null;
  render();
  $("#composer-input").focus();
}

document.addEventListener("click", (ev) => {
  const t = ev.target;
  const button = t.closest(".bk-button[data-action-id]");
  if (button) { clickButton(button); return; }
  const side = t.closest(".side-item[data-channel]");
  if (side) { goto(side.dataset.channel); return; }
  const chLink = t.closest("[data-goto]");
  if (chLink) { goto(chLink.dataset.goto); return; }
  const replies = t.closest("[data-thread]");
  if (replies) {
    const msg = replies.closest("[data-channel]");
    S.thread = {channel: msg.dataset.channel, ts: replies.dataset.thread};
    S.keys.main = "";
    render();
    return;
  }
  const copy = t.closest("[data-copy]");
  if (copy) {
    copyText(copy.dataset.copy).then((ok) => flashButton(copy, ok ? "Copied ✓" : "Copy failed"));
    return;
  }
  const copyFrom = t.closest("[data-copy-from]");
  if (copyFrom) {
    const src = document.getElementById(copyFrom.dataset.copyFrom);
    copyText(src ? src.textContent : "").then((ok) => flashButton(copyFrom, ok ? "Copied ✓" : "Copy failed"));
    return;
  }
  if (t.closest("[data-open-hostsetup]")) { openHostSetup(); return; }
  const save = t.closest("[data-save-cert]");
  if (save) {
    api(`/api/certificate/${encodeURIComponent(save.dataset.saveCert)}/save`, {user: S.user}).then((res) => {
      if (res.ok) { flashButton(save, "Saved ✓"); toast(`Saved ${res.path} — the demo ssh line in Host set-up uses it`); }
      else toast(res.error || "could not save", true);
    });
    return;
  }
  const dismiss = t.closest("[data-dismiss]");
  if (dismiss) { S.dismissed.add(dismiss.dataset.dismiss); S.keys = {}; render(); return; }
  const use = t.closest("[data-use]");
  if (use) {
    if (use.dataset.as && use.dataset.as !== S.user) {
      switchUser(use.dataset.as);
      toast(`You are now ${userNameFromInfo(use.dataset.as)}`);
    }
    useCommand(use.dataset.use);
    return;
  }
  const sug = t.closest("[data-suggest]");
  if (sug) { useCommand(sug.dataset.suggest + " "); return; }
  if (t.closest("[data-modal-close]")) { closeModal(); return; }
  if (t.id === "thread-close") { S.thread = null; S.keys.main = ""; render(); return; }
  if (t.id === "hostsetup-close" || t.id === "hostsetup-backdrop") { $("#hostsetup-backdrop").hidden = true; return; }
  if (t.id === "howto-toggle") { toggleHowto(); return; }
  if (t.id === "howto-close") { toggleHowto(false); return; }
  if (t.id === "host-setup-button") { openHostSetup(); return; }
  if (!t.closest("#composer")) hideSuggest();
});

document.addEventListener("change", (ev) => {
  if (ev.target.id === "user-switch") switchUser(ev.target.value);
  if (ev.target.id === "hostsetup-target") openHostSetup(ev.target.value);
});

document.addEventListener("keydown", (ev) => {
  if (ev.key !== "Escape") return;
  if (!$("#hostsetup-backdrop").hidden) $("#hostsetup-backdrop").hidden = true;
  else if (!$("#modal-backdrop").hidden) closeModal();
  else hideSuggest();
});

function userNameFromInfo(id) {
  const u = S.info && S.info.users.find((x) => x.id === id);
  return u ? u.name : id;
}

async function init() {
  S.info = await api("/api/info");
  document.title = `${S.info.team} — Vouch sandbox`;
  $("#team-name").textContent = S.info.team;
  if (!S.info.users.some((u) => u.id === S.user)) S.user = S.info.users[0].id;
  $("#user-switch").innerHTML = S.info.users
    .map((u) => `<option value="${esc(u.id)}">${esc(u.name)} — ${esc(u.role)}</option>`).join("");
  $("#user-switch").value = S.user;
  renderHowto();
  toggleHowto(localStorage.getItem("vouch.howto") !== "hidden");
  $("#composer").addEventListener("submit", (ev) => { ev.preventDefault(); sendCommand($("#composer-input").value); });
  $("#composer-input").addEventListener("input", showSuggest);
  $("#modal").addEventListener("submit", submitModal);
  poll(true);
}

init().catch((e) => { setConn(false); toast(`could not load the sandbox: ${e}`, true); });
