/* Vouch sandbox page: Slack's mrkdwn and Block Kit as HTML. Everything from Slack or typed by a
 * person goes through esc(); only markup built here is left unescaped. */
"use strict";

function esc(s) {
  return String(s ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}
function unent(s) { return String(s ?? "").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&"); }

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
    + ` data-value="${esc(el.value || "")}" data-label="${esc(label)}"${ctx.home ? ` data-home="1"` : ""}`
    + `${ctx.ephemeral ? " disabled" : ""}>${esc(label)}</button>`;
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
