/* Vouch sandbox page: modals (views.open) and the App Home (views.publish), rendered generically
 * from their blocks. */
"use strict";

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
        control = `<select id="${esc(id)}" ${controlAttrs(b, el)} data-type="static_select">`
          + `<option value=""${init ? "" : " selected"}>${esc(ph)}</option>`
          + (el.options || []).map((o) => `<option value="${esc(o.value)}"${o.value === init ? " selected" : ""}>${esc(o.text.text)}</option>`).join("")
          + `</select>`;
      } else if (el.type === "plain_text_input") {
        const ph = el.placeholder ? ` placeholder="${esc(el.placeholder.text)}"` : "";
        // maxlength stops typing at the limit, as Slack does; min_length is checked on submit.
        const max = el.max_length ? ` maxlength="${esc(el.max_length)}"` : "";
        const attrs = `id="${esc(id)}" ${controlAttrs(b, el)} data-type="plain_text_input"${ph}${max}`;
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
    S.modalErrors = "";
    const first = form.querySelector("select, input, textarea");
    if (first) first.focus();
  }
  // Only the bot's errors as they change: a poll must not wipe what the page itself said.
  const errors = JSON.stringify(view.errors || {});
  if (errors !== S.modalErrors) { S.modalErrors = errors; showModalErrors(view.errors || {}); }
}

function controlAttrs(b, el) {
  const min = el.min_length ? ` data-min="${esc(el.min_length)}"` : "";
  return `data-block-id="${esc(b.block_id)}" data-action-id="${esc(el.action_id)}"`
    + `${b.optional ? "" : ' data-required="1"'}${min}`;
}

// What Slack checks itself before it sends a submission (the bot only sees valid forms).
function clientErrors(form) {
  const errors = {};
  for (const c of $$("[data-block-id]", form)) {
    const v = c.value;
    if (!v && c.dataset.required) errors[c.dataset.blockId] = "Please complete this required field.";
    else if (v && c.dataset.min && v.length < +c.dataset.min) {
      errors[c.dataset.blockId] = `Please enter at least ${c.dataset.min} characters.`;
    }
  }
  return errors;
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
  const local = clientErrors(form);
  if (Object.keys(local).length) { showModalErrors(local); return; }
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
/* App Home (views.publish)                                                                 */

// Opening the tab is Slack's app_home_opened, sent every time, signed like every other event.
async function openHome() {
  S.home = true;
  S.thread = null;
  localStorage.setItem("vouch.channel", "@home");
  render();
  const res = await api("/api/home/open", {user: S.user});
  if (!res.ok) toast(res.error || `the bot answered HTTP ${res.status}`, true);
  poll(true);
}

function renderHome() {
  const home = S.state.home;
  $("#channel-title").textContent = "Vouch — Home";
  $("#channel-topic").textContent = "What concerns you: your requests, your certificates, what waits for your vote";
  const key = JSON.stringify([S.user, "@home", home]);
  if (key === S.keys.main) return;
  const [user, shown] = S.keys.main ? JSON.parse(S.keys.main) : [];
  const switched = user !== S.user || shown !== "@home";
  S.keys.main = key;
  const ctx = {kind: "home", channel: "", ts: "", home: true};
  $("#message-list").innerHTML = home
    ? `<div class="home" data-testid="app-home">${(home.blocks || []).map((b) => blockHtml(b, ctx)).join("")}</div>`
    : `<div class="empty" data-testid="app-home-empty">Vouch has not published a Home for you yet…</div>`;
  if (switched) $("#messages").scrollTop = 0;  // a republished Home keeps where the reader was
}

// A Home button is found again by its label and value in the home published now, as a person
// sees it; the bot gets a block_actions with a view container.
async function clickHomeButton(btn) {
  if (btn.disabled) return;
  btn.disabled = true;
  const res = await api("/api/home/click", {user: S.user, value: btn.dataset.value, text: btn.dataset.label});
  if (!res.ok) toast(res.error || `the bot answered HTTP ${res.status}`, true);
  setTimeout(() => { btn.disabled = false; }, 600);
  poll(true);
}
