"""/readyz makes a real test signature: a CA key that answers but cannot sign is not ready.

`vouch serve` runs on a SoftHSM2 token; another process (as an HSM administrator would) takes the
key's CKA_SIGN away and gives it back. Reading an attribute of the key still works meanwhile, so
only a signature tells. The answer is cached for a few seconds, so the flip is polled for.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from e2e_support import HsmToken, Server, base_env, make_fake, make_token, policy_yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE_MARGIN = 4.0  # seconds: within vouch.web.PROBE_TTL (5 s) of a probe, with room for timing

SET_SIGN = r"""
import sys
from pkcs11 import Attribute, ObjectClass
from ca.pkcs11 import load_module
label, pin, value = sys.argv[1:4]
session = load_module("/usr/lib/softhsm/libsofthsm2.so").get_token(token_label=label).open(
    rw=True, user_pin=pin)
session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="vouch-ca")[Attribute.SIGN] = \
    value == "on"
session.close()
"""


def set_sign(token: HsmToken, on: bool) -> None:
    env = {**base_env(), "SOFTHSM2_CONF": str(token.conf), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", SET_SIGN, token.label, token.pin, "on" if on else "off"],
                   env=env, check=True, capture_output=True, timeout=30)


def wait_ready(server: Server, status: int, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        answer = server.get("/readyz")
        if answer.status == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


@pytest.fixture
def hsm(tmp_path):
    token = make_token(tmp_path / "softhsm")
    fake = make_fake()
    server = Server(tmp_path / "vouch", fake, policy_yaml(), ca_key=token.uri,
                    extra_env={"SOFTHSM2_CONF": str(token.conf)})
    try:
        yield server.start(), token
    finally:
        server.stop()
        fake.stop()
    assert server.proc.returncode in (0, -signal.SIGTERM), server.log()


def test_a_key_that_cannot_sign_is_not_ready_until_it_can_again(hsm):
    server, token = hsm
    assert server.get("/readyz").status == 200
    set_sign(token, False)
    try:
        refused = wait_ready(server, 503)
        probed_at = time.monotonic()  # this answer came from a test signature made just now
        assert refused.status == 503, refused.text
        assert refused.text.startswith("not ready: PKCS#11 key 'vouch-ca' in token 'vouch-e2e' "
                                       "cannot sign: "), refused.text
        assert token.pin not in refused.text
    finally:
        set_sign(token, True)

    # The key signs again, but a storm of probes within the TTL gets the cached answer: had each
    # probe signed, they would say 200.
    def timed(_):
        started = time.monotonic()
        return started, server.get("/readyz")

    with ThreadPoolExecutor(16) as pool:
        storm = list(pool.map(timed, range(64)))
    within = [answer for started, answer in storm if started - probed_at < CACHE_MARGIN]
    assert {(a.status, a.text) for a in within} <= {(503, refused.text)}
    assert within, "this machine took too long to flip the attribute back; nothing was checked"
    assert wait_ready(server, 200).status == 200
