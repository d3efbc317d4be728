"""access.signed_calls with signatures `ssh-keygen -Y sign` made, and the replay record on both
databases: a call is accepted once, by the key that signed exactly it, at about the right time."""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import datetime, timedelta, timezone

import pytest

from access.signed_calls import API, SCHEME, Unauthorized, check, first_use, message
from ca.sshsig import MAGIC
from ca.wire import Reader, put_mpint, put_string, put_u32
from conftest import run
from storage.store import SqlStore

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=timezone.utc)
TARGET = "/api/v1/requests"
BODY = b'{"target": "prod-db", "duration": "1h", "reason": "slow queries"}'


def sign(tmp_path, private, text: bytes, namespace: str = API) -> str:
    path = tmp_path / f"call-{hashlib.sha256(text + namespace.encode()).hexdigest()[:12]}"
    path.write_bytes(text)
    path.with_name(path.name + ".sig").unlink(missing_ok=True)
    run("ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(private), str(path))
    return path.with_name(path.name + ".sig").read_text()


def header(armored: str) -> str:
    return f"{SCHEME} {base64.b64encode(armored.encode()).decode()}"


def signed(tmp_path, key, *, at: datetime = NOW, method="POST", target=TARGET, body=BODY,
           namespace=API) -> dict:
    stamp = str(int(at.timestamp()))
    armored = sign(tmp_path, key.private, message(stamp, method, target, body), namespace)
    return {"authorization": header(armored), "timestamp": stamp}


def checked(call: dict, *, method="POST", target=TARGET, body=BODY, now=NOW):
    return check(method=method, target=target, body=body, namespace=API, now=now, **call)


@pytest.mark.parametrize("key", ["ed25519", "ecdsa-p256", "rsa-2048"])
def test_a_call_signed_by_a_key_names_that_key(tmp_path, user_keys, key):
    call = checked(signed(tmp_path, user_keys[key]))
    assert call.key == user_keys[key].public
    assert call.fingerprint == user_keys[key].public.fingerprint


@pytest.mark.parametrize("change, why", [
    ({"body": BODY.replace(b"1h", b"4h")}, "bad signature"),
    ({"method": "DELETE"}, "bad signature"),
    ({"target": TARGET + "?x=1"}, "bad signature"),
    ({"now": NOW + timedelta(seconds=301)}, "301 s off"),
    ({"now": NOW - timedelta(seconds=301)}, "301 s off"),
])
def test_anything_but_the_signed_call_at_its_time_is_refused(tmp_path, user_keys, change, why):
    call = signed(tmp_path, user_keys["ed25519"])
    with pytest.raises(Unauthorized, match=why):
        checked(call, **change)


def test_a_signature_for_hosts_does_not_open_requests(tmp_path, user_keys):
    call = signed(tmp_path, user_keys["ed25519"], namespace="vouch-host")
    with pytest.raises(Unauthorized, match="'vouch-host', not 'vouch-api'"):
        checked(call)


@pytest.mark.parametrize("call, why", [
    ({"authorization": None, "timestamp": "1"}, "no signature"),
    ({"authorization": "Bearer abc", "timestamp": "1"}, "unknown authorization scheme"),
    ({"authorization": f"{SCHEME} !!!", "timestamp": str(int(NOW.timestamp()))}, "not base64"),
    ({"authorization": f"{SCHEME} aGVsbG8=", "timestamp": str(int(NOW.timestamp()))},
     "not an SSH signature"),
    ({"authorization": f"{SCHEME} x", "timestamp": "99999999999999999999"}, "unix seconds"),
    ({"authorization": f"{SCHEME} x", "timestamp": "-5"}, "unix seconds"),
    ({"authorization": f"{SCHEME} x", "timestamp": "٣"}, "unix seconds"),
    ({"authorization": f"{SCHEME} " + "A" * 40000, "timestamp": str(int(NOW.timestamp()))},
     "too long"),
])
def test_malformed_authorization_is_a_clear_refusal(call, why):
    with pytest.raises(Unauthorized, match=why):
        checked(call)


def malleate(armored: str) -> str:
    """The same ECDSA signature with s replaced by n - s: other bytes, still valid."""
    lines = armored.strip().splitlines()
    blob = base64.b64decode("".join(lines[1:-1]))
    reader = Reader(blob)
    reader.fixed(len(MAGIC)), reader.u32()
    key, namespace, reserved, algorithm = (reader.string(), reader.string(), reader.string(),
                                           reader.string())
    signature = Reader(reader.string())
    sig_type, raw = signature.string(), Reader(signature.string())
    r, s = raw.mpint(), raw.mpint()
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's order
    inner = put_string(sig_type) + put_string(put_mpint(r) + put_mpint(n - s))
    out = (MAGIC + put_u32(1) + put_string(key) + put_string(namespace) + put_string(reserved)
           + put_string(algorithm) + put_string(inner))
    text = base64.b64encode(out).decode()
    return "\n".join([lines[0], *[text[i:i + 70] for i in range(0, len(text), 70)], lines[-1]])


def test_a_replay_is_refused_even_with_a_malleated_signature(tmp_path, user_keys, database):
    store = SqlStore(database, audit_key=None)
    call = signed(tmp_path, user_keys["ecdsa-p256"])
    first = checked(call)
    other_bytes = {**call, "authorization": header(malleate(
        base64.b64decode(call["authorization"].split()[1]).decode()))}
    again = checked(other_bytes)  # it verifies: ECDSA allows it
    assert hashlib.sha256(other_bytes["authorization"].encode()).digest() != \
        hashlib.sha256(call["authorization"].encode()).digest()
    with store.unit() as unit:
        first_use(unit, first, NOW)
    with pytest.raises(Unauthorized, match="already used"), store.unit() as unit:
        first_use(unit, again, NOW + timedelta(seconds=1))
    # The same message signed again later is still the same call: refused too.
    with pytest.raises(Unauthorized, match="already used"), store.unit() as unit:
        first_use(unit, checked(signed(tmp_path, user_keys["ecdsa-p256"])), NOW)


def test_concurrent_replays_through_two_connections_let_exactly_one_through(
        tmp_path, user_keys, database):
    store = SqlStore(database, audit_key=None)
    call = checked(signed(tmp_path, user_keys["ed25519"]))
    outcomes: list[str] = []

    def use() -> None:
        try:
            with store.unit() as unit:
                first_use(unit, call, NOW)
            outcomes.append("ok")
        except Unauthorized:
            outcomes.append("replay")

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["replay"] * 7


def test_old_calls_are_forgotten_once_they_could_no_longer_pass_the_clock(tmp_path, user_keys,
                                                                           database):
    store = SqlStore(database, audit_key=None)
    old = checked(signed(tmp_path, user_keys["ed25519"]))
    with store.unit() as unit:
        first_use(unit, old, NOW)
    later = NOW + timedelta(minutes=12)
    fresh = checked(signed(tmp_path, user_keys["ed25519"], at=later), now=later)
    with store.unit() as unit:
        first_use(unit, fresh, later)
    with database.transaction() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM used_signatures").scalar()
    assert count == 1
