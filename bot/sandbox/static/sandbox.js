/* Vouch sandbox page: renders the fake Slack workspace and turns clicks and slash commands into
 * the signed requests Slack would send (through the sandbox's /api). Plain JS, no build step. */
"use strict";

const POLL_MS = 700;
// The bot acks Slack first and acts after (lazy listeners): look more often for a while after
// anything the page sent, so its answer shows up as it lands rather than a poll later.
const QUICK_POLL_MS = 150;
const QUICK_FOR_MS = 3000;
const S = {
  info: null,              // /api/info: demo users, demo key, targets
  state: null,             // /api/state for the current user
  user: localStorage.getItem("vouch.user") || "U0ALICE",
  channel: localStorage.getItem("vouch.channel") || "C0REQUESTS",
  wantDm: localStorage.getItem("vouch.channel") === "@dm",
  home: localStorage.getItem("vouch.channel") === "@home",  // the App Home tab is shown
  thread: null,            // {channel, ts} of the open thread
  seen: {},                // user -> channel -> number of items seen
  dismissed: new Set(),    // ephemeral ids dismissed
  lastJson: "",
  keys: {},                // what was last rendered, per part
  modalKey: "",
  modalErrors: "",         // the bot's modal errors last shown (JSON)
  known: new Set(),        // message keys rendered before (to highlight new ones)
  busy: false,
  quickUntil: 0,           // Date.now() until which polls are quick
};

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                  */

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  if (body !== undefined) S.quickUntil = Date.now() + QUICK_FOR_MS;
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
    const wait = pollAgain ? 0 : Date.now() < S.quickUntil ? QUICK_POLL_MS : POLL_MS;
    pollTimer = setTimeout(() => poll(), wait);
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
  if (S.home) openHome(); else poll(true);
}

function goto(channelId) {
  S.channel = channelId;
  S.wantDm = false;
  S.home = false;
  const ch = channelById(channelId);
  localStorage.setItem("vouch.channel", ch && ch.kind === "dm" ? "@dm" : channelId);
  if (S.thread && S.thread.channel !== channelId) S.thread = null;
  render();
  $("#composer-input").focus();
}

document.addEventListener("click", (ev) => {
  const t = ev.target;
  const button = t.closest(".bk-button[data-action-id]");
  if (button) { if (button.dataset.home) clickHomeButton(button); else clickButton(button); return; }
  if (t.closest("[data-home-tab]")) { openHome(); return; }
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
  if (S.home) openHome(); else poll(true);
}

init().catch((e) => { setConn(false); toast(`could not load the sandbox: ${e}`, true); });
