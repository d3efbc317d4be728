"""`vouch request` and `vouch ssh`: ask through the client API (vouch.api) with a call signed by
the user's own key, show where the request stands until a colleague decides, then put the
certificate where `ssh` finds it.

Exit status: 0 issued (or a usable certificate reused), 1 denied, expired, cancelled or any
other failure, 2 bad input (here, or refused by the server as such).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from access.signed_calls import API, SCHEME, message
from ca.errors import BadInput, VouchError
from ca.keys import read_key_fields
from ca.wire import Reader, WireError
from vouch import client_keys
from vouch.client_keys import UserKey

WAIT = 25  # seconds each poll lets the server hold its answer (the server allows 30)
MIN_LEFT = 60  # seconds a reused certificate must still be valid for
ENDED = {"denied": "denied", "expired": "expired before anyone decided",
         "cancelled": "cancelled", "revoked": "revoked"}


class Refused(BadInput):
    """The server refused the call as bad input or not allowed (HTTP 4xx): exit 2."""


class Ended(VouchError):
    """The request ended without a certificate: exit 1."""


@dataclass
class Client:
    """Signed calls to one Vouch server with one key."""

    url: str
    key: UserKey
    _last: tuple[str, str, str] | None = None

    def call(self, method: str, path: str, payload: dict | None = None,
             *, timeout: float = 15) -> dict[str, Any]:
        body = json.dumps(payload).encode() if payload is not None else b""
        stamp = self._timestamp(method, path)
        armored = client_keys.sign(self.key, message(stamp, method, path, body), API)
        headers = {"Authorization": f"{SCHEME} {base64.b64encode(armored.encode()).decode()}",
                   "X-Vouch-Timestamp": stamp, "Content-Type": "application/json",
                   "User-Agent": "vouch-client"}
        request = urllib.request.Request(self.url + path, data=body or None, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            error = _error_of(err)
            if err.code in (400, 401, 403, 404, 409, 413, 422):
                raise Refused(error) from None
            raise VouchError(f"Vouch answered {err.code}: {error}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise VouchError(f"cannot reach Vouch at {self.url}: {reason}") from None

    def _timestamp(self, method: str, path: str) -> str:
        """The same call signed twice in one second is one message, which the server refuses
        as a replay: wait for the next second instead."""
        stamp = str(int(time.time()))
        if self._last == (stamp, method, path):
            time.sleep(1.0 - time.time() % 1.0 + 0.01)
            stamp = str(int(time.time()))
        self._last = (stamp, method, path)
        return stamp


def server_url(given: str | None) -> str:
    url = (given or os.environ.get("VOUCH_URL") or "").strip().rstrip("/")
    if not url:
        raise BadInput("where is Vouch? give --url https://vouch.example.com or set VOUCH_URL")
    if not url.startswith(("https://", "http://")):
        raise BadInput(f"--url must start with https:// (or http:// on a trusted network): {url}")
    return url


def request_access(client: Client, target: str, duration: str, reason: str,
                   out: TextIO = sys.stderr) -> dict[str, Any]:
    """Open the request and follow it to its end: the issued request, or Ended. Ctrl-C while
    waiting cancels it."""
    try:
        opened = client.call("POST", "/api/v1/requests", {
            "target": target, "duration": duration, "reason": reason,
            "public_key": client.key.public.line()})["request"]
    except KeyboardInterrupt:
        raise Ended("interrupted before Vouch answered: the request may be open; /ssh-status "
                    "in Slack lists it, and /ssh-request cancel <id> withdraws it") from None
    request_id = opened["id"]
    where = opened.get("channel_name") or opened.get("channel") or "Slack"
    print(f"waiting for approval in {where}: request {request_id}; "
          f"{_tally(opened)} (Ctrl-C cancels)", file=out, flush=True)
    try:
        return _follow(client, opened, out)
    except KeyboardInterrupt:
        print(f"\ncancelling request {request_id}…", file=out, flush=True)
        try:
            client.call("DELETE", f"/api/v1/requests/{request_id}")
        except VouchError as exc:
            raise Ended(f"request {request_id} may still be pending: cancelling it failed: "
                        f"{exc.message}") from None
        raise Ended(f"request {request_id} cancelled") from None


def _follow(client: Client, request: dict[str, Any], out: TextIO) -> dict[str, Any]:
    told = {a["id"] for a in request.get("approved_by", [])}
    while True:
        if request["state"] == "issued" and request.get("certificate"):
            return request
        if request["state"] in ENDED:
            raise Ended(_ending(request))
        request = client.call("GET", f"/api/v1/requests/{request['id']}?wait={WAIT}",
                              timeout=WAIT + 15)["request"]
        for approver in request.get("approved_by", []):
            if approver["id"] not in told:
                told.add(approver["id"])
                print(f"approved by {approver['name']} ({_tally(request)})", file=out,
                      flush=True)


def _ending(request: dict[str, Any]) -> str:
    said = ENDED[request["state"]]
    by = request.get("decided_by")
    if isinstance(by, dict):
        said += f" by {by['name']}"
    if request.get("note"):
        said += f": {request['note']}"
    return f"request {request['id']} {said}"


def _tally(request: dict[str, Any]) -> str:
    return f"{request.get('approvals', 0)} of {request.get('approvals_required') or '?'} approvals"


def _error_of(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read()).get("error") or err.reason)
    except (ValueError, AttributeError, OSError):
        return str(err.reason)


# --- the certificate on disk ------------------------------------------------------------------

def seconds_left(request: dict[str, Any]) -> int:
    valid_before = datetime.fromisoformat(request["valid_before"])
    return int((valid_before - datetime.now(timezone.utc)).total_seconds())


def reusable(client: Client, target: str) -> dict[str, Any] | None:
    """The issued request behind `<key>-cert.pub`, if it is for `target`, still the server's
    (not revoked) and valid for a while yet."""
    path = client.key.certificate_path
    if not path.is_file():
        return None
    line = path.read_text().strip()
    request_id = _request_id(line)
    if request_id is None:
        return None
    try:
        request = client.call("GET", f"/api/v1/requests/{request_id}")["request"]
    except Refused:
        return None  # not ours, or forgotten: ask anew
    if (request["target"] != target or request["state"] != "issued"
            or (request.get("certificate") or "").split()[:2] != line.split()[:2]
            or seconds_left(request) < MIN_LEFT):
        return None
    return request


def _request_id(certificate_line: str) -> str | None:
    """The request named in a Vouch certificate's key ID (`vouch:<kind>:<request>:<user>`)."""
    try:
        reader = Reader(base64.b64decode(certificate_line.split()[1], validate=True))
        cert_type = reader.text()
        reader.string()  # nonce
        read_key_fields(cert_type.replace("-cert-v01@openssh.com", "").replace(
            "sk-ssh-ed25519", "sk-ssh-ed25519@openssh.com").replace(
            "sk-ecdsa-sha2-nistp256", "sk-ecdsa-sha2-nistp256@openssh.com"), reader)
        reader.u64(), reader.u32()  # serial, certificate type
        key_id = reader.text()
    except (IndexError, ValueError, WireError, BadInput, KeyError):
        return None
    parts = key_id.split(":")
    return parts[2] if len(parts) == 4 and parts[0] == "vouch" else None


def install(client: Client, request: dict[str, Any], out: TextIO = sys.stderr) -> Path:
    path = client_keys.save_certificate(client.key, request["certificate"])
    left = seconds_left(request)
    print(f"certificate for {request['target']} (serial {request['serial']}, principals "
          f"{', '.join(request['principals'])}) valid for {left // 60} min: {path}", file=out)
    problem = client_keys.add_to_agent(client.key, left)
    if problem:
        print(f"not added to ssh-agent: {problem}", file=out)
    return path


def _served(url: str) -> list[str]:
    """The `@cert-authority` and `@revoked` lines of Vouch's /known_hosts."""
    try:
        with urllib.request.urlopen(url + "/known_hosts", timeout=10) as response:
            text = response.read(64 * 1024).decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return []
    return [line.strip() for line in text.splitlines()
            if line.startswith(("@cert-authority ", "@revoked "))]


def _answered_by_vouch(url: str) -> bool:
    """https, or plain http to this machine: nobody on the network can answer in Vouch's place.
    (/known_hosts is not signed, and ssh believes the CA it names for the hosts it names.)"""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return True
    try:
        return (parts.hostname == "localhost"
                or ipaddress.ip_address(parts.hostname or "").is_loopback)
    except ValueError:
        return False


def trust_host_ca(url: str, known_hosts: Path | None = None) -> bool:
    """Add the host CA to ~/.ssh/known_hosts when it is missing there, and the served `@revoked`
    lines (host keys whose certificates Vouch revoked: without them ssh accepts those until they
    expire); True if the CA was added. Never over plain http to another machine: whoever is on
    the path could add their own CA."""
    if not _answered_by_vouch(url):
        return False
    served = _served(url)
    line = next((line for line in served if line.startswith("@cert-authority ")), None)
    if line is None:
        return False
    path = known_hosts or Path.home() / ".ssh" / "known_hosts"
    present = path.read_text(errors="replace").splitlines() if path.exists() else []

    def missing(wanted: str) -> bool:
        marker = wanted.split()[0]
        return not any(existing.split()[2:4] == wanted.split()[2:4] for existing in present
                       if existing.startswith(marker + " "))

    revoked = [wanted for wanted in served if wanted.startswith("@revoked ")]
    added = [wanted for wanted in [line, *revoked] if missing(wanted)]
    if not added:
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ends_cleanly = not path.exists() or path.read_bytes().endswith(b"\n") or not present
    with open(path, "a") as known:
        known.write(("" if ends_cleanly else "\n") + "\n".join(added) + "\n")
    return line in added
