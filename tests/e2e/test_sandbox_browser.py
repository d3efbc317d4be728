"""The sandbox end to end: the real bot (`vouch serve`, a child process), the fake Slack and the
page, driven in headless Chromium.

What a person does on the page reaches the bot as the signed requests Slack would send; the
certificate that comes back in the DM must be one `ssh-keygen -L` reads; Cancel, Deny and Revoke
(with what is typed into the bot's modals) and the App Home work as in Slack. Screenshots of every step
are saved under the test's tmp dir (``screenshots/``).

Also here, without a browser: the port-taken and files-in-the-way messages, reuse of a previous
run's files, the bot's process (its own settings, its log, stopped with the sandbox), and the
request form (a modal) through the page's API.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from bot.sandbox.server import Sandbox
from ca.errors import BadInput

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


# --- helpers ----------------------------------------------------------------------------

def _post(url: str, data: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        return json.loads(resp.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=15) as resp:
        return json.loads(resp.read())


def _wait(predicate, timeout: float = 15.0, what: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.1)


@pytest.fixture
def sandbox(tmp_path):
    sb = Sandbox(port=0, workdir=tmp_path / "sandbox", scheduler_interval=1.0).start()
    try:
        yield sb
    finally:
        sb.stop()


# --- the browser ------------------------------------------------------------------------

@pytest.fixture
def browser(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed "
                    "(make test installs chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--no-default-browser-check", "--window-size=1440,960",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # An explicit driver path: selenium-manager must not look anything up or download.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_life_of_a_request_in_the_browser(sandbox, browser, tmp_path):
    """Register a key, request, approve, receive and use the certificate; then what people do
    with requests afterwards: Cancel, Deny with a reason (a modal, its errors), the App Home's
    lists and buttons, and Revoke with a reason."""
    from support.browser import Page

    shots = tmp_path / "screenshots"
    shots.mkdir()
    d = browser
    page = Page(d, shots)
    wait, shot, by_testid, click = page.wait, page.shot, page.by_testid, page.click
    become, open_sidebar, command, ephemeral_with = (page.become, page.open_sidebar, page.command,
                                                     page.ephemeral_with)

    d.get(sandbox.url + "/")
    wait(lambda _: len(page.all("#user-switch option")) == 5)
    become("U0ALICE")
    open_sidebar("channel-C0REQUESTS")
    assert sandbox.demo_key.line in by_testid("demo-key-command").text
    shot("00-start")

    # alice registers the demo key: the bot answers ephemerally, "Only visible to you".
    command(f"/ssh-key add {sandbox.demo_key.line}")
    wait(lambda _: ephemeral_with(sandbox.demo_key.fingerprint))
    assert "Only visible to you" in wait(lambda _: by_testid("ephemeral").text)
    shot("01-alice-registered-key")

    # alice asks for prod-db: the request is posted in #access-requests with its buttons.
    command("/ssh-request prod-db 1h testing the sandbox")
    request = page.card_text("testing the sandbox", "prod-db")
    for shown in ("@alice", "prod-db", "postgres", "1h", sandbox.demo_key.fingerprint):
        assert shown in request
    wait(lambda _: all(page.has_button("testing the sandbox", label)
                       for label in ("Approve", "Deny", "Cancel")))
    wait(lambda _: ephemeral_with("prod-db"))  # the bot's answer to alice alone
    shot("02-alice-request-posted")

    # bob approves with the button, as a click Slack would send, signed.
    become("U0BOB")
    open_sidebar("channel-C0REQUESTS")
    page.click_on_card("testing the sandbox", "Approve")
    # the card is updated in place (Revoke replaces the votes); the decision is a thread reply,
    # under the approvers' note with its Approve with comment
    wait(lambda _: page.has_button("testing the sandbox", "Revoke")
         and not page.has_button("testing the sandbox", "Approve"))
    thread = page.thread_of("testing the sandbox", "@bob")
    assert "Approve with comment" in thread
    wait(lambda _: len(page.all('#thread-replies [data-testid="message"]')) >= 2)
    shot("03-bob-approved")

    # alice finds the certificate in her DM with Vouch.
    become("U0ALICE")
    open_sidebar("dm-vouch")
    line = wait(lambda _: by_testid("certificate-line").text.strip())
    assert line.startswith("ssh-ed25519-cert-v01@openssh.com ")
    wait(lambda _: by_testid("action-Extend") and by_testid("action-Request again"))
    click("copy-certificate")
    wait(lambda _: "Copied" in by_testid("copy-certificate").text)
    shot("04-alice-certificate-dm")

    cert_file = tmp_path / "demo_key-cert.pub"
    cert_file.write_text(line + "\n")
    listed = subprocess.run(["ssh-keygen", "-L", "-f", str(cert_file)], capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "user certificate" in listed.stdout
    assert sandbox.demo_key.fingerprint in listed.stdout
    assert "postgres" in listed.stdout

    # "Save next to the demo key" writes it where the demo ssh line expects it.
    click("save-certificate")
    saved = sandbox.demo_key.certificate
    _wait(lambda: saved.exists() and saved.read_text().strip() == line, what=f"{saved} written")

    # The Download button serves the same line, named for the demo key.
    href = wait(lambda _: by_testid("download-certificate").get_attribute("href"))
    with urllib.request.urlopen(href, timeout=10) as resp:
        assert resp.read().decode().strip() == line
        assert 'filename="demo_key-cert.pub"' in resp.headers["Content-Disposition"]

    # Host set-up: the `vouch host-setup` text and the exact ssh line.
    click("certificate-host-setup")
    text = wait(lambda _: by_testid("host-setup-text").text)
    assert "TrustedUserCAKeys /etc/ssh/vouch_ca.pub" in text
    assert "echo postgres > /etc/ssh/auth_principals/postgres" in text
    assert by_testid("host-setup-ssh").text == (
        "ssh -i ~/.ssh/id_ed25519 -o CertificateFile=~/.ssh/id_ed25519-cert.pub postgres@HOST")
    assert str(sandbox.demo_key.private) in by_testid("host-setup-demo-ssh").text
    shot("05-host-setup")
    click("host-setup-close")

    # alice cancels a request of hers with the card's Cancel.
    open_sidebar("channel-C0REQUESTS")
    command("/ssh-request staging 30m cancel me")
    page.click_on_card("cancel me", "Cancel")
    assert "cancelled by @alice" in page.card_text("cancel me", "cancelled")
    assert not page.has_button("cancel me", "Approve")
    shot("06-alice-cancelled", showing="cancel me")

    # two more: one for bob to deny, one for his App Home; alice's Home lists all of hers
    command("/ssh-request prod-db 2h please deny me")
    page.card_text("please deny me", "Pending")
    command("/ssh-request staging 1h approve me from the home tab")
    page.card_text("approve me from the home tab", "Pending")
    open_sidebar("home-vouch")
    home = page.text_of("app-home", "prod-db for 2h — pending", "staging for 1h — pending")
    assert "Your pending requests" in home and "Your certificates" in home
    assert home.count("— pending") == 2  # not the cancelled one
    assert "expires in" in home and "Nothing waits for you." in home
    assert not page.displayed("composer")  # Slack's Home tab has no message box
    shot("07-alice-home")

    # bob's Home (the tab stays open as the user changes: app_home_opened for bob) lists both
    # requests waiting for him; Approve there is a block_actions from a view, and the Home is
    # published again without it.
    become("U0BOB")
    page.text_of("app-home", "Waiting for your approval", "please deny me",
                 "approve me from the home tab")
    page.click_in_home("approve me from the home tab", "Approve")
    wait(lambda _: "approve me from the home tab" not in by_testid("app-home").text)
    assert "please deny me" in by_testid("app-home").text
    shot("08-bob-home-approved")
    open_sidebar("channel-C0REQUESTS")
    page.card_text("approve me from the home tab", "certificate issued")

    # bob denies the other: the modal asks why; what Slack checks itself (a required field) and
    # what the bot refuses (response_action: errors) are both shown under the field.
    reason = "change freeze until Monday <b>sorry</b> & <!channel>"
    page.click_on_card("please deny me", "Deny")
    modal = page.modal("Deny request")
    assert "prod-db" in modal.text and "(optional)" not in modal.text
    page.submit_modal()
    page.field_error("note", "required")
    page.fill("note", "ok ")  # three characters typed, two once spaces are collapsed
    page.submit_modal()
    page.field_error("note", "Write at least 3 characters")
    shot("09-bob-deny-modal-error")
    page.fill("note", reason)
    page.submit_modal()
    page.modal_closed()
    card = page.card_text("please deny me", "Denied by @bob")
    assert reason in card  # as typed: no markup, no mention, no ping
    assert not page.has_button("please deny me", "Deny")
    assert reason in page.thread_of("please deny me", "denied this request")
    shot("10-bob-denied", showing="please deny me")

    become("U0ALICE")
    open_sidebar("dm-vouch")
    wait(lambda _: page.card("was denied by @bob") is not None)
    assert reason in page.card("was denied by @bob").text

    # alice revokes her first certificate from its card, saying why.
    open_sidebar("channel-C0REQUESTS")
    page.click_on_card("testing the sandbox", "Revoke")
    page.modal("Revoke certificate")
    page.fill("note", "laptop left on the train")
    page.submit_modal()
    page.modal_closed()
    card = page.card_text("testing the sandbox", "Revoked by @alice")
    assert "laptop left on the train" in card
    assert not page.has_button("testing the sandbox", "Revoke")
    shot("11-alice-revoked", showing="testing the sandbox")

    logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"] \
        if hasattr(d, "get_log") else []
    assert not logs, logs


# --- without a browser ------------------------------------------------------------------

def test_taken_port_is_one_clear_error_and_touches_no_files(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BadInput) as err:
            Sandbox(port=port, workdir=tmp_path / "sb").start()
    message = err.value.message
    assert f"port {port}" in message and "--port" in message
    assert "\n" not in message
    assert not (tmp_path / "sb").exists()


@pytest.mark.parametrize("name, content, expect", [
    ("ca_key", b"this is not a key\n", "ca_key"),
    ("vouch.db", b"garbage, not SQLite" * 100, "vouch.db"),
    ("policy.yaml", b"targets: [\n", "policy.yaml"),
])
def test_files_in_the_way_say_what_to_delete(tmp_path, name, content, expect):
    workdir = tmp_path / "sb"
    workdir.mkdir()
    (workdir / name).write_bytes(content)
    with pytest.raises(BadInput) as err:
        Sandbox(port=0, workdir=workdir).start()
    message = err.value.message
    assert expect in message
    assert "delete" in message
    assert "\n" not in message


def test_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "sb").write_text("x")
    with pytest.raises(BadInput, match="in the way"):
        Sandbox(port=0, workdir=tmp_path / "sb").start()


def test_second_run_reuses_the_files(tmp_path):
    workdir = tmp_path / "sb"
    with Sandbox(port=0, workdir=workdir) as first:
        assert sorted(first.created) == ["ca_key", "demo_key", "policy.yaml", "vouch.db"]
        key = first.demo_key
    ca = (workdir / "ca_key").read_bytes()
    with Sandbox(port=0, workdir=workdir) as second:
        assert second.created == []
        assert second.demo_key == key
        assert _get(second.url + "/api/info")["demo_key"]["public"] == key.line
    assert (workdir / "ca_key").read_bytes() == ca


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_bot_is_vouch_serve_in_a_process_stopped_with_the_sandbox(tmp_path):
    sb = Sandbox(port=0, workdir=tmp_path / "sb").start()
    try:
        pid = sb.bot.pid
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
        assert argv[1:4] == [b"-m", b"vouch", b"serve"]
        with urllib.request.urlopen(sb.bot_url + "/readyz", timeout=10) as resp:
            assert resp.status == 200
        # the page hands hosts the bot's own CA line and KRL
        with urllib.request.urlopen(sb.url + "/ca.pub", timeout=10) as resp:
            assert resp.read().decode().split()[:2] == \
                (tmp_path / "sb" / "ca_key.pub").read_text().split()[:2]
        with urllib.request.urlopen(sb.url + "/krl", timeout=10) as resp:
            assert resp.read().startswith(b"SSHKRL\n\0")
        assert "Uvicorn running" in (tmp_path / "sb" / "vouch.log").read_text()
    finally:
        sb.stop()
    assert sb.bot.exit_code() is not None
    assert not _running(pid)


def test_the_callers_vouch_settings_do_not_reach_the_bot(tmp_path, monkeypatch):
    # Each of these would break the sandbox's bot, or point it at something real.
    monkeypatch.setenv("VOUCH_DATABASE_URL", "postgresql+psycopg://prod.example.invalid/vouch")
    monkeypatch.setenv("VOUCH_SLACK_APP_TOKEN", "xapp-1-A0REAL-1234-abcdef")
    monkeypatch.setenv("VOUCH_CA_KEY", "pkcs11:token=prod;object=vouch-ca")
    monkeypatch.setenv("VOUCH_SECRETS_DIR", str(tmp_path / "no-such-dir"))
    with Sandbox(port=0, workdir=tmp_path / "sb") as sb:
        assert (tmp_path / "sb" / "vouch.db").is_file()
        assert _post(sb.url + "/api/command", {"user": "U0ALICE", "channel": "C0GENERAL",
                                               "text": f"/ssh-key add {sb.demo_key.line}"})["ok"]
        _wait(lambda: any("Registered" in e["text"]
                          for e in _get(sb.url + "/api/state?user=U0ALICE")["ephemerals"]),
              what="key added over HTTP, not Socket Mode")


def test_a_bot_that_refuses_to_start_is_one_error_naming_its_log(tmp_path):
    workdir = tmp_path / "sb"
    workdir.mkdir()
    (workdir / "vouch.db").write_bytes(b"garbage, not SQLite" * 100)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BadInput) as err:
        Sandbox(port=port, workdir=workdir).start()
    assert str(workdir / "vouch.log") in err.value.message
    assert (workdir / "vouch.log").read_text().strip()
    with socket.socket() as again:  # the page's port was given back
        again.bind(("127.0.0.1", port))


def test_request_form_modal_through_the_page_api(sandbox):
    url = sandbox.url
    key = sandbox.demo_key.line
    assert _post(url + "/api/command", {"user": "U0ALICE", "channel": "C0GENERAL",
                                        "text": f"/ssh-key add {key}"})["ok"]
    # help is answered in the HTTP response itself, and shown as an ephemeral
    answer = _post(url + "/api/command", {"user": "U0ALICE", "channel": "C0GENERAL",
                                          "text": "/ssh-request help"})
    assert "Usage" in answer["response"]["text"]
    bad = _post(url + "/api/command", {"user": "U0ALICE", "channel": "C0GENERAL", "text": "/nope"})
    assert not bad["ok"] and "not a valid command" in bad["error"]

    _wait(lambda: any("Registered" in e["text"]
                      for e in _get(url + "/api/state?user=U0ALICE")["ephemerals"]),
          what="key added")
    assert _post(url + "/api/command", {"user": "U0ALICE", "channel": "C0GENERAL",
                                        "text": "/ssh-request"})["ok"]
    modal = _wait(lambda: _get(url + "/api/state?user=U0ALICE")["modal"], what="modal opened")
    assert [b["block_id"] for b in modal["blocks"]][:3] == ["target", "duration", "reason"]
    assert _get(url + "/api/state?user=U0BOB")["modal"] is None  # only alice sees her modal
    # her App Home, published meanwhile (views.publish), is no modal: the form stays open
    assert _post(url + "/api/home/open", {"user": "U0ALICE"})["ok"]
    _wait(lambda: _get(url + "/api/state?user=U0ALICE")["home"], what="App Home published")
    assert _get(url + "/api/state?user=U0ALICE")["modal"]["id"] == modal["id"]

    wrong = _post(url + "/api/view", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "target": {"value": {"type": "static_select", "selected_option": None}},
        "duration": {"value": {"type": "plain_text_input", "value": "soon"}},
        "reason": {"value": {"type": "plain_text_input", "value": None}}}})
    assert not wrong["ok"] and set(wrong["errors"]) == {"target", "duration", "reason"}
    assert _get(url + "/api/state?user=U0ALICE")["modal"]["errors"]["duration"]

    right = _post(url + "/api/view", {"user": "U0ALICE", "view_id": modal["id"], "values": {
        "target": {"value": {"type": "static_select",
                             "selected_option": {"text": {"type": "plain_text", "text": "staging"},
                                                 "value": "staging"}}},
        "duration": {"value": {"type": "plain_text_input", "value": "30m"}},
        "reason": {"value": {"type": "plain_text_input", "value": "deploy check"}}}})
    assert right["ok"], right
    assert _get(url + "/api/state?user=U0ALICE")["modal"] is None

    def posted():
        state = _get(url + "/api/state?user=U0CAROL")
        channel = next(c for c in state["channels"] if c["id"] == "C0REQUESTS")
        return [m for m in channel["messages"] if "staging" in m["text"]]

    message = _wait(posted, what="request posted")[0]
    assert "deploy check" in message["text"]
    # the host set-up for that target names its principal
    setup = _get(url + "/api/host-setup?target=staging")
    assert "echo deploy > /etc/ssh/auth_principals/deploy" in setup["text"]
    assert setup["ssh"].endswith("deploy@HOST")


def test_ssh_keygen_made_the_demo_key(sandbox):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    key = sandbox.demo_key
    assert key.private.stat().st_mode & 0o077 == 0
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key.private)], capture_output=True,
                             text=True, timeout=30)
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == key.line.split()[:2]
    assert Path(str(key.private) + ".pub").exists()


def test_another_site_cannot_drive_the_page(sandbox):
    """The page acts for whoever reaches it: a cross-site POST (another tab's form or fetch) and
    a foreign Host (DNS rebinding) are refused; the page itself (same origin) works."""
    import urllib.error

    url = sandbox.url
    body = json.dumps({"user": "U0ALICE", "channel": "C0GENERAL", "text": "/ssh-status"}).encode()

    def post(headers: dict) -> int:
        request = urllib.request.Request(url + "/api/command", data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:
                return answer.status
        except urllib.error.HTTPError as answer:
            return answer.code

    assert post({"Origin": "https://evil.example"}) == 403
    assert post({"Origin": url.replace("127.0.0.1", "localhost")}) == 403  # another origin
    assert post({"Host": "evil.example"}) == 403
    assert post({"Origin": url}) == 200
    assert post({}) == 200  # not a browser: no Origin


def test_a_sandbox_on_every_address_says_so_loudly(tmp_path):
    from bot.sandbox.server import _banner

    sandbox = Sandbox(port=0, host="0.0.0.0", workdir=tmp_path / "sandbox")
    assert "WARNING: the sandbox listens on 0.0.0.0" in _banner(sandbox)
    assert "WARNING" not in _banner(Sandbox(port=0, workdir=tmp_path / "other"))
