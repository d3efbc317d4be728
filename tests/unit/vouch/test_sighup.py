"""vouch.serve's SIGHUP: the policy is reloaded, and a signer latched on a refused PIN logs in
again."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from access.policy_file import PolicyStore
from ca.errors import SignerUnavailable
from vouch.serve import Vouch, handle_sighup

POLICY = Path(__file__).resolve().parents[3] / "examples" / "policy.yaml"


class Signer:
    def __init__(self, outcome: bool | Exception = True) -> None:
        self.outcome = outcome
        self.resets = threading.Event()

    def reset(self) -> bool:
        self.resets.set()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class Access:
    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.records: list[dict] = []

    def record(self, **event) -> None:
        self.records.append(event)


def make_vouch(signer: Signer, policy_path: Path = POLICY) -> Vouch:
    return Vouch(settings=None, db=None, access=Access(signer), bot=None, web=None, jobs=None,
                 policy=PolicyStore(str(policy_path)), scheduler=None)


def test_reload_reloads_the_policy_and_resets_the_signer(caplog):
    vouch = make_vouch(signer := Signer(True))
    with caplog.at_level(logging.INFO, logger="vouch.serve"):
        vouch.reload()
    assert [r["action"] for r in vouch.access.records] == ["policy.reloaded"]
    assert signer.resets.is_set()
    assert "the CA signer logged in again" in caplog.text


def test_a_refused_policy_still_resets_the_signer(tmp_path, caplog):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.read_text())
    vouch = make_vouch(signer := Signer(False), path)
    path.write_text("targets: [not, a, mapping\n")
    with caplog.at_level(logging.INFO, logger="vouch.serve"):
        vouch.reload()
    assert [r["action"] for r in vouch.access.records] == ["policy.reload_refused"]
    assert signer.resets.is_set()
    assert "logged in again" not in caplog.text  # nothing was latched: nothing to say


def test_a_signer_still_refused_is_logged_not_raised(caplog):
    refused = SignerUnavailable("PKCS#11 key 'ca' in token 't': the PIN was refused (PinIncorrect)")
    vouch = make_vouch(Signer(refused))
    with caplog.at_level(logging.INFO, logger="vouch.serve"):
        vouch.reload()
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == ("the CA signer is still unavailable after SIGHUP: PKCS#11 key "
                                  "'ca' in token 't': the PIN was refused (PinIncorrect)")


def test_sighup_runs_reload():
    vouch = make_vouch(signer := Signer(True))
    previous = signal.getsignal(signal.SIGHUP)
    try:
        handle_sighup(vouch)
        os.kill(os.getpid(), signal.SIGHUP)
        assert signer.resets.wait(5)
    finally:
        signal.signal(signal.SIGHUP, previous)
