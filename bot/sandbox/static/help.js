/* Vouch sandbox page: the how-to and the host set-up dialog. */
"use strict";

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
    + `(alice cannot approve her own request — try it.) <b>Deny</b> asks why; alice can <b>Cancel</b> her own; `
    + `once issued, <b>Revoke</b> ends it early. <span class="channel-link" data-home-tab="1">Vouch Home</span> lists what concerns whoever you are.</li>`
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
