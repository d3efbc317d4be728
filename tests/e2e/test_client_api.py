"""The client API over HTTP against `vouch serve` and the fake Slack: every call signed with
`ssh-keygen -Y sign -n vouch-api` exactly as CONTRACT "Client API authentication" describes
(this file builds the signed message itself, apart from the `vouch` client's code)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from e2e_support import (BOB, CAROL, DAN, NOKEY, REQUESTER, Server, make_fake, policy_yaml,
                         settle)
from support import fido
from test_bot import (REQUESTS, deny, ok, register_key, request_message, shown, state,
                      wait_state)


@pytest.fixture(scope="module")
def server(tmp_path_factory, user_keys):
    fake = make_fake()
    srv = Server(tmp_path_factory.mktemp("client-api"), fake, policy_yaml())
    srv.start()
    register_key(srv, REQUESTER, user_keys["ed25519"])
    register_key(srv, DAN, user_keys["ecdsa-p256"])
    settle(fake)
    yield srv
    srv.stop()
    fake.stop()


class Api:
    """Signed calls as a client makes them; `at`, `sign_body` and `headers` bend the rules."""

    def __init__(self, server: Server, tmp_path) -> None:
        self.server, self.tmp, self.n = server, tmp_path, 0

    def signature(self, key_path, text: bytes) -> str:
        self.n += 1
        path = self.tmp / f"call-{self.n}"
        path.write_bytes(text)
        subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "vouch-api", "-f", str(key_path),
                        str(path)], check=True, capture_output=True)
        armored = path.with_name(path.name + ".sig").read_bytes()
        return "Vouch-SSHSIG " + base64.b64encode(armored).decode()

    def headers_for(self, key_path, method: str, target: str, body: bytes, *,
                    at: int | None = None, sign_body: bytes | None = None) -> dict:
        stamp = str(int(time.time()) if at is None else at)
        digest = hashlib.sha256(body if sign_body is None else sign_body).hexdigest()
        text = f"v1\n{stamp}\n{method}\n{target}\n{digest}".encode()
        return {"Authorization": self.signature(key_path, text), "X-Vouch-Timestamp": stamp,
                "Content-Type": "application/json"}

    def send(self, method: str, target: str, body: bytes, headers: dict):
        request = urllib.request.Request(self.server.url + target, data=body or None,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=40) as response:
                return (response.status, json.loads(response.read()),
                        {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), {k.lower(): v for k, v in err.headers.items()}

    def call(self, key, method: str, target: str, payload: dict | None = None, **bend):
        body = json.dumps(payload).encode() if payload is not None else b""
        return self.send(method, target, body,
                         self.headers_for(key.private, method, target, body, **bend))


@pytest.fixture
def api(server, tmp_path):
    return Api(server, tmp_path)


def opened(server) -> int:
    return server.scalar("SELECT count(*) FROM requests")


def ask(api, key, reason: str, target: str = "prod-db", duration: str = "1h", **extra):
    return api.call(key, "POST", "/api/v1/requests",
                    {"target": target, "duration": duration, "reason": reason,
                     "public_key": key.public.line(), **extra})


def test_a_terminal_request_is_posted_as_proven_approved_in_slack_and_polled_to_its_certificate(
        server, api, user_keys):
    key = user_keys["ed25519"]
    status, answer, _ = ask(api, key, "api: slow queries")
    assert status == 201, answer
    request = answer["request"]
    assert request["state"] == "pending" and request["target"] == "prod-db"
    assert request["channel"] == REQUESTS and request["channel_name"] == "#access-requests"
    assert (request["approvals"], request["approvals_required"]) == (0, 1)
    message = request_message(server, "api: slow queries")
    assert "from the terminal, key proven" in shown(message)
    assert server.scalar("SELECT key_proven FROM requests WHERE id = ?", request["id"]) == 1

    # A held GET answers as soon as Bob approves, not when its wait is over.
    got: dict = {}
    began = time.monotonic()
    poll = threading.Thread(target=lambda: got.update(answer=api.call(
        key, "GET", f"/api/v1/requests/{request['id']}?wait=20")))
    poll.start()
    time.sleep(1.0)
    ok(server.driver.click_button(BOB, channel=REQUESTS, ts=message.ts, label="Approve"))
    poll.join(timeout=25)
    status, answer, _ = got["answer"]
    assert status == 200 and time.monotonic() - began < 10
    request = answer["request"]
    if request["state"] != "issued":  # the approval and the certificate are two steps
        status, answer, _ = api.call(key, "GET", f"/api/v1/requests/{request['id']}?wait=10")
        request = answer["request"]
    assert request["state"] == "issued"
    assert request["approved_by"] == [{"id": BOB, "name": "bob"}]
    cert = api.tmp / "id-cert.pub"
    cert.write_text(request["certificate"] + "\n")
    shown_cert = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True,
                                text=True, check=True).stdout
    assert f"Serial: {request['serial']}" in shown_cert and request["id"] in shown_cert
    assert key.public.fingerprint in subprocess.run(
        ["ssh-keygen", "-l", "-f", str(cert)], capture_output=True, text=True).stdout


def test_the_attacks_on_authentication_are_refused_and_open_nothing(server, api, user_keys,
                                                                   tmp_path):
    key = user_keys["ed25519"]
    body = {"target": "prod-db", "duration": "1h", "reason": "attack",
            "public_key": key.public.line()}
    raw = json.dumps(body).encode()
    before = opened(server)

    unregistered = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(unregistered)],
                   check=True)
    headers = api.headers_for(unregistered, "POST", "/api/v1/requests", raw)
    status, answer, _ = api.send("POST", "/api/v1/requests", raw, headers)
    assert status == 401 and "not registered" in answer["error"]

    # Dan's key signs a request that would certify the requester's key.
    status, answer, _ = api.call(user_keys["ecdsa-p256"], "POST", "/api/v1/requests", body)
    assert status == 401 and "not the key that signed" in answer["error"]

    status, answer, _ = api.call(key, "POST", "/api/v1/requests", body, at=int(time.time()) - 400)
    assert status == 401 and "off the server's" in answer["error"]

    tampered = json.dumps({**body, "duration": "4h"}).encode()
    headers = api.headers_for(key.private, "POST", "/api/v1/requests", tampered, sign_body=raw)
    status, answer, _ = api.send("POST", "/api/v1/requests", tampered, headers)
    assert status == 401 and "bad signature" in answer["error"]

    for headers in ({}, {"Authorization": "Bearer x", "X-Vouch-Timestamp": "1"}):
        status, answer, _ = api.send("POST", "/api/v1/requests", raw, headers)
        assert status == 401 and answer["error"]
    assert opened(server) == before

    # A replay of a call that worked: the first opens a request, the second nothing.
    headers = api.headers_for(key.private, "POST", "/api/v1/requests",
                              json.dumps({**body, "reason": "replayed"}).encode())
    replayed = json.dumps({**body, "reason": "replayed"}).encode()
    assert api.send("POST", "/api/v1/requests", replayed, headers)[0] == 201
    status, answer, _ = api.send("POST", "/api/v1/requests", replayed, headers)
    assert status == 401 and "already used" in answer["error"]
    assert opened(server) == before + 1


def test_nobody_sees_or_cancels_another_users_request(server, api, user_keys):
    status, answer, _ = ask(api, user_keys["ed25519"], "api: mine alone")
    request_id = answer["request"]["id"]
    dan = user_keys["ecdsa-p256"]
    for method in ("GET", "DELETE"):
        status, answer, _ = api.call(dan, method, f"/api/v1/requests/{request_id}")
        assert status == 404 and answer == {"error": f"you have no request '{request_id}'"}
    status, answer, _ = api.call(dan, "GET", "/api/v1/requests/req-doesnotexist")
    assert status == 404 and "you have no request" in answer["error"]
    assert state(server, request_id) == "pending"


def test_cancel_and_deny_reach_the_terminal_with_who_and_why(server, api, user_keys):
    key = user_keys["ed25519"]
    _, answer, _ = ask(api, key, "api: cancel me")
    cancelled_id = answer["request"]["id"]
    message = request_message(server, "api: cancel me")
    status, answer, _ = api.call(key, "DELETE", f"/api/v1/requests/{cancelled_id}")
    assert status == 200 and answer["request"]["state"] == "cancelled"
    server.fake.wait_for(lambda: "cancelled" in shown(server.fake.message(REQUESTS, message.ts)))
    # The same call signed in the same second would be the same message: a replay.
    status, answer, _ = api.call(key, "DELETE", f"/api/v1/requests/{cancelled_id}",
                                 at=int(time.time()) + 1)
    assert status == 409 and answer["error"]

    _, answer, _ = ask(api, key, "api: deny me")
    denied_id = answer["request"]["id"]
    deny(server, BOB, request_message(server, "api: deny me").ts, "not during the freeze")
    wait_state(server, denied_id, "denied")
    status, answer, _ = api.call(key, "GET", f"/api/v1/requests/{denied_id}")
    request = answer["request"]
    assert request["state"] == "denied" and request["note"] == "not during the freeze"
    assert request["decided_by"] == {"id": BOB, "name": "bob"}
    assert request["certificate"] is None


@pytest.mark.parametrize("payload, status, says", [
    ({"target": "nope", "duration": "1h", "reason": "x"}, 403, "unknown target 'nope'"),
    ({"target": "prod-db", "duration": "9h", "reason": "x"}, 403, "4h"),
    ({"target": "prod-db", "duration": "soon", "reason": "x"}, 422, "duration"),
    ({"target": "prod-db", "duration": "1h"}, 422, "reason is required"),
    ({"target": "prod-db", "duration": "1h", "reason": "x", "admin": True}, 422,
     "unknown field 'admin'"),
])
def test_bad_requests_get_the_message_slack_would_show(server, api, user_keys, payload, status,
                                                       says):
    got, answer, _ = api.call(user_keys["ecdsa-p256"], "POST", "/api/v1/requests", payload)
    assert got == status and says in answer["error"], answer


def test_bad_wait_and_bodies_are_clear_refusals(server, api, user_keys):
    key = user_keys["ecdsa-p256"]
    status, answer, _ = api.call(key, "GET", "/api/v1/requests/req-x?wait=31")
    assert status == 422 and "0 to 30" in answer["error"]
    raw = b"[1, 2]"
    status, answer, _ = api.send("POST", "/api/v1/requests", raw,
                                 api.headers_for(key.private, "POST", "/api/v1/requests", raw))
    assert status == 422 and "JSON object" in answer["error"]


def test_a_key_is_rate_limited_with_retry_after(server, api, user_keys):
    key = user_keys["ecdsa-p256"]
    statuses = []
    for n in range(24):  # `n`: each call a message of its own (not a replay of the last)
        status, answer, headers = api.call(key, "GET", f"/api/v1/requests/req-none?n={n}")
        statuses.append(status)
        if status == 429:
            assert int(headers["retry-after"]) >= 1 and "too many calls" in answer["error"]
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {404}, statuses


def test_an_offboarded_users_key_no_longer_opens_anything(tmp_path, user_keys):
    fake = make_fake()
    srv = Server(tmp_path / "vouch", fake, policy_yaml())
    srv.start()
    try:
        register_key(srv, NOKEY, user_keys["rsa-2048"])
        api = Api(srv, tmp_path)
        status, _, _ = ask(api, user_keys["rsa-2048"], "before leaving")
        assert status == 201
        fake.add_user(NOKEY, "nokey", deleted=True)
        ok(srv.driver.event({"type": "user_change", "user": {"id": NOKEY, "deleted": True}}))
        fake.wait_for(lambda: srv.scalar("SELECT count(*) FROM user_keys WHERE user_id = ? AND "
                                         "removed_at IS NULL", NOKEY) == 0, timeout=8)
        status, answer, _ = ask(api, user_keys["rsa-2048"], "after leaving")
        assert status == 401 and "not registered" in answer["error"]
        assert srv.scalar("SELECT count(*) FROM requests WHERE reason = 'after leaving'") == 0
    finally:
        srv.stop()
        fake.stop()


def test_a_security_key_signs_its_own_request(server, api, user_keys):
    """A FIDO sk-ed25519 key, as a YubiKey signs (PROTOCOL.u2f), stood in for in software."""
    sk_key = user_keys["sk-ed25519"]
    register_key(server, CAROL, sk_key)
    payload = {"target": "crowd", "duration": "30m", "reason": "api: touched",
               "public_key": sk_key.public.line()}
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    text = f"v1\n{stamp}\nPOST\n/api/v1/requests\n{hashlib.sha256(body).hexdigest()}".encode()
    armored = fido.sign(user_keys["ed25519"].private, sk_key.public, text, "vouch-api")
    headers = {"Authorization": "Vouch-SSHSIG " + base64.b64encode(armored.encode()).decode(),
               "X-Vouch-Timestamp": stamp, "Content-Type": "application/json"}
    status, answer, _ = api.send("POST", "/api/v1/requests", body, headers)
    assert status == 201, answer
    assert answer["request"]["key_fingerprint"] == sk_key.public.fingerprint
    # Signed without a touch (the user-presence flag clear): not the person at the keyboard.
    again = body + b" "
    text = f"v1\n{stamp}\nPOST\n/api/v1/requests\n{hashlib.sha256(again).hexdigest()}".encode()
    untouched = fido.sign(user_keys["ed25519"].private, sk_key.public, text, "vouch-api", flags=0)
    headers["Authorization"] = "Vouch-SSHSIG " + base64.b64encode(untouched.encode()).decode()
    status, answer, _ = api.send("POST", "/api/v1/requests", again, headers)
    assert status == 401 and "not touched" in answer["error"], answer


def test_replaying_a_captured_call_does_not_lock_its_key_out(server, api, user_keys):
    key = user_keys["ecdsa-p384"]
    register_key(server, BOB, key)
    headers = api.headers_for(key.private, "GET", "/api/v1/requests/req-captured", b"")
    assert api.send("GET", "/api/v1/requests/req-captured", b"", headers)[0] == 404
    for _ in range(30):
        assert api.send("GET", "/api/v1/requests/req-captured", b"", headers)[0] == 401
    status, answer, _ = api.call(key, "GET", "/api/v1/requests/req-fresh")
    assert status == 404, answer  # its owner's next call goes through (not 429)
