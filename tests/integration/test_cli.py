"""`vouch` as an operator runs it: the real console script in a subprocess, a clean environment
per test (no inherited VOUCH_* variable), and OpenSSH itself (`ssh-keygen -L/-Q`, a real sshd)
as the judge of what it writes.

Contract (CONTRACT.md, "CLI"): exit 0 on success; exit 2 for bad input or usage with ONE clear
line on stderr saying what and why; exit 1 for any other failure; never a Python traceback.

Every `vouch` process costs ~0.3-1 s of start-up, so related steps share module-scoped fixtures
that run the commands once (`story`, `batch`) and the tests then judge the results.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ca.keys import parse_public_key
from ca.krl import decode_krl
from ca.wire import put_mpint, put_string
from support.sshd import DEFAULT_USER, Sshd, require_sshd

REPO = Path(__file__).resolve().parents[2]
VOUCH = REPO / ".venv" / "bin" / "vouch"
if not VOUCH.exists():  # a venv elsewhere: use the script next to the running interpreter
    VOUCH = Path(sys.executable).with_name("vouch")
SSH_KEYGEN = shutil.which("ssh-keygen")
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

pytestmark = pytest.mark.skipif(
    SSH_KEYGEN is None, reason="ssh-keygen is not installed (apt-get install openssh-client)"
)

BACKDATE = 60  # seconds: CONTRACT "Certificates": valid_after = issue time - 60 s
SLACK = 5  # seconds of tolerance on validity times (process start-up, whole-second rounding)
KEY_TYPES = {  # `ca init --type` -> the OpenSSH key type `ca pubkey` must print
    "ecdsa-p256": "ecdsa-sha2-nistp256",
    "ecdsa-p384": "ecdsa-sha2-nistp384",
    "ed25519": "ssh-ed25519",
    "rsa-3072": "ssh-rsa",
    "rsa-4096": "ssh-rsa",
}


# --- running vouch ----------------------------------------------------------------------


@dataclass
class Result:
    argv: list[str]
    returncode: int
    out: bytes
    err: str

    @property
    def stdout(self) -> str:
        return self.out.decode()

    def __str__(self) -> str:  # what a failed assertion shows
        out = self.out[:2000].decode(errors="replace")
        return (f"\n$ vouch {' '.join(self.argv)}\nexit {self.returncode}\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{self.err}")


def _clean_env() -> dict[str, str]:
    """The outer environment without anything that could steer vouch or SoftHSM2."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("VOUCH_") and k != "SOFTHSM2_CONF"}


class Vouch:
    """The CLI with its own working directory, SQLite database and CA key setting."""

    def __init__(self, cwd: Path, **env: str) -> None:
        self.cwd = Path(cwd)
        self.env = {**_clean_env(), "VOUCH_DATABASE_URL": f"sqlite:///{self.cwd / 'vouch.db'}",
                    "VOUCH_CA_KEY": str(self.cwd / "ca_key"), **env}

    def with_env(self, **env: str | None) -> Vouch:
        """A copy with some variables changed (None removes one)."""
        other = Vouch(self.cwd)
        other.env = {**self.env, **env}
        other.env = {k: v for k, v in other.env.items() if v is not None}
        return other

    def run(self, *args: str | Path, input: bytes | str | None = None) -> Result:
        argv = [str(a) for a in args]
        data = input.encode() if isinstance(input, str) else input
        cp = subprocess.run([str(VOUCH), *argv], env=self.env, cwd=self.cwd, input=data,
                            stdin=subprocess.DEVNULL if data is None else None,
                            capture_output=True, timeout=120, check=False)
        return Result(argv, cp.returncode, cp.stdout, cp.stderr.decode(errors="replace"))

    def ok(self, *args: str | Path, input: bytes | str | None = None) -> Result:
        result = self.run(*args, input=input)
        assert result.returncode == 0, result
        assert_no_traceback(result)
        return result


WORKERS = (os.cpu_count() or 2) + 1


def concurrently(jobs: dict[str, tuple[Vouch, tuple]], *, workers: int = WORKERS
                 ) -> dict[str, Result]:
    """Run independent invocations at once ({name: (vouch, argv)}): start-up is CPU-bound."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(vouch.run, *argv) for name, (vouch, argv) in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err, result
    assert "Traceback" not in result.out.decode(errors="replace"), result


def assert_bad_input(result: Result, *words: str) -> None:
    """Exit 2 with exactly one non-empty stderr line that names the problem; nothing on stdout."""
    assert_no_traceback(result)
    assert result.returncode == 2, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected ONE stderr line{result}"
    for word in words:
        assert word.lower() in lines[0].lower(), f"stderr does not name {word!r}{result}"
    assert result.out == b"", result


def one_line(result: Result) -> str:
    """stdout must be exactly one newline-terminated line; returns it without the newline."""
    text = result.stdout
    assert text.endswith("\n") and text.count("\n") == 1, result
    return text[:-1]


# --- OpenSSH as the judge -----------------------------------------------------------------


def keygen(*args: str | Path, cwd: Path | None = None, check: bool = True,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run([SSH_KEYGEN, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                        env={**_clean_env(), "TZ": "UTC"}, input=input,
                        stdin=subprocess.DEVNULL if input is None else None, check=False)
    if check:
        assert cp.returncode == 0, f"ssh-keygen {args}: exit {cp.returncode}\n{cp.stderr}"
    return cp


@dataclass
class Listing:
    """`ssh-keygen -L -f CERT`, parsed (it also verifies the CA signature)."""

    type: str
    public_key: str  # "ED25519-CERT SHA256:…"
    signing_ca: str  # "ECDSA SHA256:… (using ecdsa-sha2-nistp256)"
    key_id: str
    serial: int
    valid_from: datetime
    valid_to: datetime
    principals: list[str]
    critical_options: dict[str, str]
    extensions: list[str]


def listing(cert: Path) -> Listing:
    text = keygen("-L", "-f", cert).stdout
    fields: dict[str, str] = {}
    items: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines()[1:]:
        if line.startswith(" " * 16):
            items[current].append(line.strip())
        elif line.strip():
            current, _, value = line.strip().partition(":")
            fields[current] = value.strip()
            items[current] = []
    valid = re.fullmatch(r"from (\S+) to (\S+)", fields["Valid"])
    assert valid, text

    def utc(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc)

    return Listing(
        type=fields["Type"], public_key=fields["Public key"], signing_ca=fields["Signing CA"],
        key_id=json.loads(fields["Key ID"]), serial=int(fields["Serial"]),
        valid_from=utc(valid.group(1)), valid_to=utc(valid.group(2)),
        principals=items["Principals"],
        critical_options=dict(o.partition(" ")[::2] for o in items["Critical Options"]),
        extensions=items["Extensions"])


def krl_verdict(krl: Path, cert: Path) -> str:
    """`ssh-keygen -Q -f KRL CERT`: "REVOKED" or "ok" (anything else means it failed)."""
    cp = keygen("-Q", "-f", krl, cert, check=False)
    words = cp.stdout.split()
    verdict = words[-1] if words else ""
    assert (verdict, cp.returncode) in (("ok", 0), ("REVOKED", 1)), \
        f"ssh-keygen -Q: exit {cp.returncode}\n{cp.stdout}{cp.stderr}"
    return verdict


def fingerprint_of(line: str) -> str:
    return parse_public_key(line).fingerprint


def write_cert(path: Path, result: Result) -> Path:
    path.write_bytes(result.out)
    return path


# --- ca init: file keys --------------------------------------------------------------------


@pytest.fixture(scope="module")
def inits(tmp_path_factory) -> dict[str, tuple[Path, Result, Result]]:
    """`ca init` (then `ca pubkey`) for every type, each in its own directory, all at once."""
    made = {t: Vouch(tmp_path_factory.mktemp(f"init-{t}")) for t in KEY_TYPES}
    # ecdsa-p256 without --type: it is the default
    created = concurrently({t: (v, ("ca", "init") if t == "ecdsa-p256" else
                                   ("ca", "init", "--type", t)) for t, v in made.items()})
    shown = concurrently({t: (v, ("ca", "pubkey")) for t, v in made.items()})
    return {t: (made[t].cwd, created[t], shown[t]) for t in KEY_TYPES}


@pytest.mark.parametrize("key_type", list(KEY_TYPES))
def test_ca_init_file_key_of_each_type(inits, key_type: str) -> None:
    root, created, pubkey = inits[key_type]
    key = root / "ca_key"
    assert created.returncode == 0, created
    assert_no_traceback(created)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pubkey.returncode == 0, pubkey
    line = one_line(pubkey)
    assert line.split()[0] == KEY_TYPES[key_type], line
    if key_type.startswith("rsa-"):
        assert parse_public_key(line).bits == int(key_type[4:])
    # The file really holds that key (OpenSSH derives the same public key from it) ...
    derived = keygen("-y", "-f", key).stdout.split()[:2]
    assert line.split()[:2] == derived
    # ... and `ca init` printed it too, with ca_key.pub beside the key (README).
    assert one_line(created).split()[:2] == derived
    assert (root / "ca_key.pub").read_text().split()[:2] == derived


def test_ca_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    vouch = Vouch(tmp_path)
    key, pub = tmp_path / "ca_key", tmp_path / "ca_key.pub"
    vouch.ok("ca", "init", "--type", "ed25519")
    line = one_line(vouch.ok("ca", "pubkey"))
    before = key.read_bytes(), pub.read_bytes()

    again = vouch.run("ca", "init", "--type", "ed25519")
    assert_bad_input(again, "exist")
    assert (key.read_bytes(), pub.read_bytes()) == before  # the very same bytes

    vouch.ok("ca", "init", "--type", "ed25519", "--force")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    replaced = one_line(vouch.ok("ca", "pubkey"))
    assert replaced.split()[0] == "ssh-ed25519"
    assert replaced.split()[1] != line.split()[1]
    assert keygen("-y", "-f", key).stdout.split()[:2] == replaced.split()[:2]


def test_ca_init_key_option_overrides_env(tmp_path: Path) -> None:
    vouch = Vouch(tmp_path, VOUCH_CA_KEY=str(tmp_path / "from_env"))
    created = vouch.ok("ca", "init", "--key", "from_option", "--type", "ed25519")
    assert not (tmp_path / "from_env").exists()
    key = tmp_path / "from_option"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert one_line(created).split()[:2] == keygen("-y", "-f", key).stdout.split()[:2]
    assert one_line(vouch.with_env(VOUCH_CA_KEY=str(key)).ok("ca", "pubkey")).split()[:2] == \
        one_line(created).split()[:2]


# --- ca init / pubkey / sign: a SoftHSM2 token ------------------------------------------------


def assert_pin_hidden(result: Result, pin: str) -> None:
    """The PIN must not be echoed. Base64 key/certificate blobs are skipped: they are random and
    could contain the digits by chance."""
    assert pin not in result.err, result
    assert "pin-value=" not in result.err, result  # the URI's attribute, echoed
    for line in result.stdout.splitlines():
        words = line.split()
        visible = " ".join(words[:1] + words[2:]) if len(words) >= 2 else line
        assert pin not in visible, result
        assert "pin-value" not in visible, result


PIN_WARNING = ("vouch: warning: the PKCS#11 URI on the command line holds its PIN (pin-value), "
               "which every user of this host can read (ps); give it with "
               "pin-source=file:PATH or VOUCH_PKCS11_PIN instead")


def warned(result: Result) -> Result:
    """The result without the warning a PIN on the command line earns (asserted here)."""
    assert result.err.startswith(PIN_WARNING + "\n"), result
    return dataclasses.replace(result, err=result.err.removeprefix(PIN_WARNING + "\n"))


@pytest.fixture(scope="module")
def token_ca(softhsm, tmp_path_factory) -> tuple[str, str]:
    """A CA key created in the session's SoftHSM2 token by `vouch ca init --key URI`."""
    root = tmp_path_factory.mktemp("token-ca")
    label = f"cli-ca-{uuid.uuid4().hex[:8]}"
    uri = softhsm.uri(label, **{"pin-value": softhsm.pin})
    vouch = Vouch(root, SOFTHSM2_CONF=str(softhsm.conf))
    created = vouch.ok("ca", "init", "--key", uri)
    assert_pin_hidden(created, softhsm.pin)
    return label, one_line(created)


def test_pkcs11_ca_init_pubkey_sign(softhsm, token_ca, tmp_path: Path, user_keys) -> None:
    label, created_line = token_ca
    assert created_line.split()[0] == "ecdsa-sha2-nistp256"  # the default type
    uri = softhsm.uri(label, **{"pin-value": softhsm.pin})
    vouch = Vouch(tmp_path, SOFTHSM2_CONF=str(softhsm.conf), VOUCH_CA_KEY=uri)

    # Refuses to replace the token's key without --force; the key is unchanged afterwards.
    again = vouch.run("ca", "init", "--key", uri)
    assert_bad_input(warned(again), label)
    assert_pin_hidden(again, softhsm.pin)

    # PIN and module in the URI, or in VOUCH_PKCS11_PIN / VOUCH_PKCS11_MODULE, or pin-source.
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    bare = f"pkcs11:token={softhsm.label};object={label}"
    variants = {
        "uri": vouch,
        "env": vouch.with_env(VOUCH_CA_KEY=bare, VOUCH_PKCS11_PIN=softhsm.pin,
                              VOUCH_PKCS11_MODULE=softhsm.module),
        "pin-source": vouch.with_env(VOUCH_CA_KEY=f"{bare}?pin-source=file:{pin_file}",
                                     VOUCH_PKCS11_MODULE=softhsm.module),
    }
    for name, variant in variants.items():
        pubkey = variant.ok("ca", "pubkey")
        assert_pin_hidden(pubkey, softhsm.pin)
        assert one_line(pubkey).split()[:2] == created_line.split()[:2], name
        if name == "pin-source":
            continue  # signing through the first two is enough
        signed = variant.ok("ca", "sign", user_keys["ed25519"].public_path, "--principal", "alice",
                            "--duration", "10m", "--key-id", f"pkcs11-{name}",
                            "--reason", "testing")
        assert_pin_hidden(signed, softhsm.pin)
        cert = write_cert(tmp_path / f"{name}-cert.pub", signed)
        shown = listing(cert)  # ssh-keygen -L verifies the token's signature
        assert shown.key_id == f"pkcs11-{name}"
        assert shown.signing_ca.split()[1] == fingerprint_of(created_line)
        assert "using ecdsa-sha2-nistp256" in shown.signing_ca


def test_pkcs11_uri_without_pin_says_a_pin_is_needed(softhsm, token_ca, tmp_path: Path) -> None:
    """The key exists, but no PIN was given (no pin-value/pin-source, no VOUCH_PKCS11_PIN): the
    error must say that a PIN is missing, not send the operator hunting for a missing key."""
    label, _ = token_ca
    vouch = Vouch(tmp_path, SOFTHSM2_CONF=str(softhsm.conf), VOUCH_CA_KEY=softhsm.uri(label))
    result = vouch.run("ca", "pubkey")
    assert_no_traceback(result)
    assert result.returncode in (1, 2), result
    assert "pin" in result.err.lower(), result


def test_pkcs11_wrong_pin_is_refused_and_not_echoed(tmp_path: Path) -> None:
    """A private token (a wrong PIN must not count against the shared one)."""
    if not (os.path.exists(SOFTHSM_MODULE) and shutil.which("softhsm2-util")):
        pytest.skip("softhsm2 is not installed")
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "wrongpin",
                    "--so-pin", "87654321", "--pin", "1111"], env={**_clean_env(),
                   "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True)
    wrong = "wrong-7319"
    uri = f"pkcs11:token=wrongpin;object=ca?module-path={SOFTHSM_MODULE}&pin-value={wrong}"
    result = Vouch(tmp_path, SOFTHSM2_CONF=str(conf), VOUCH_CA_KEY=uri).run("ca", "pubkey")
    assert_no_traceback(result)
    assert result.returncode == 1, result
    assert "pin" in result.err.lower(), result
    assert_pin_hidden(result, wrong)


def test_a_pin_value_on_the_command_line_is_warned_about(softhsm, tmp_path: Path) -> None:
    labels = [f"cli-warn-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    in_uri = softhsm.uri(labels[0], **{"pin-value": softhsm.pin})
    from_file = softhsm.uri(labels[1], **{"pin-source": f"file:{pin_file}"})
    vouch = Vouch(tmp_path, SOFTHSM2_CONF=str(softhsm.conf))

    created = warned(vouch.ok("ca", "init", f"--key={in_uri}"))
    assert created.err.startswith("created ecdsa-p256 CA key in token"), created
    assert_pin_hidden(created, softhsm.pin)
    # A PIN read from a file is not on the command line; the environment is private to the user.
    quiet = concurrently({"file": (vouch, ("ca", "init", "--key", from_file)),
                          "env": (vouch.with_env(VOUCH_CA_KEY=in_uri), ("ca", "pubkey"))})
    for result in quiet.values():
        assert result.returncode == 0, result
        assert "warning" not in result.err, result
        assert_pin_hidden(result, softhsm.pin)


ECHO_PIN = "Echo-9931"
MISTYPED_URIS = {  # a separator mistyped puts the PIN inside another attribute's value
    "& in the path": "pkcs11:token=nosuch&pin-value={pin};object=ca?module-path={module}",
    "; in the query": "pkcs11:token={token};object=ca?module-path={module};pin-value={pin}",
    "a second ?": "pkcs11:token={token};object=ca?module-path={module}?pin-value={pin}",
    "a space": "pkcs11:token={token};object=ca pin-value={pin}?module-path={module}",
    "upper case": "pkcs11:token=nosuch&PIN-VALUE={pin};object=ca?module-path={module}",
    "given twice": "pkcs11:token={token};object=ca?module-path={module}&pin-value={pin}"
                   "&pin-value={pin}",
    "with pin-source": "pkcs11:token={token};object=ca?pin-value={pin}&pin-source=file:/none",
    "wrong type": "pkcs11:token={token};object=ca;type=secret-key?pin-value={pin}",
}


@pytest.mark.parametrize("template", MISTYPED_URIS.values(), ids=MISTYPED_URIS.keys())
def test_a_pin_value_on_the_command_line_is_never_echoed(softhsm, tmp_path: Path, template) -> None:
    uri = template.format(token=softhsm.label, module=softhsm.module, pin=ECHO_PIN)
    result = Vouch(tmp_path, SOFTHSM2_CONF=str(softhsm.conf)).run("ca", "init", "--key", uri)
    assert_no_traceback(result)
    assert result.returncode in (1, 2), result
    assert ECHO_PIN not in result.err and ECHO_PIN not in result.stdout, result
    assert ECHO_PIN.lower() not in result.err.lower(), result
    assert len(warned(result).err.splitlines()) == 1, result  # the warning, one line of refusal


@pytest.mark.parametrize("argv", [("ca", "init", "{uri}"), ("ca", "init", "--kye={uri}"),
                                  ("ca", "init", "--type", "{uri}"),
                                  ("ca", "init", "--type", "{uri}'\\")],
                         ids=["no --key", "misspelt option", "as a choice", "quoted by repr"])
def test_a_usage_error_does_not_repeat_a_pin(tmp_path: Path, argv) -> None:
    uri = f"pkcs11:token=t;object=ca?pin-value={ECHO_PIN}"
    result = Vouch(tmp_path).run(*(arg.format(uri=uri) for arg in argv))
    assert_no_traceback(result)
    assert result.returncode == 2, result
    assert ECHO_PIN not in result.err + result.stdout, result
    line = warned(result).err.strip()
    assert line.startswith("vouch") and "--help" in line, result


# --- sign, revoke, KRL, audit: one story, judged by several tests ------------------------------


@dataclass
class Story:
    vouch: Vouch
    root: Path
    ca_line: str
    rich: Result  # ca sign with every option, to stdout
    rich_window: tuple[datetime, datetime]  # wall clock just before and after it ran
    rich_cert: Path
    piped: Result  # ca sign - (stdin) --out FILE
    piped_out: Path
    piped_key: str  # the public key line that went in on stdin
    krl_before: Result  # vouch krl (stdout) with nothing revoked
    revoke_first: Result
    revoke_again: Result
    krl_out: Result  # vouch krl --out FILE after revoking
    krl_out_path: Path
    krl_stdout: Result  # vouch krl right after
    verify: Result
    export: Result
    export_future: Result

    @property
    def revoked_serial(self) -> int:
        return listing(self.rich_cert).serial

    @property
    def other_serial(self) -> int:
        return listing(self.piped_out).serial


@pytest.fixture(scope="module")
def story(tmp_path_factory, user_keys) -> Story:
    root = tmp_path_factory.mktemp("story")
    vouch = Vouch(root)
    ca_line = one_line(vouch.ok("ca", "init"))

    start = datetime.now(timezone.utc)
    rich = vouch.run("ca", "sign", user_keys["ed25519"].public_path,
                     "--principal", "a", "--principal", "b", "--duration", "1h30m",
                     "--key-id", "incident-ID", "--source-address", "10.0.0.0/8,192.0.2.1",
                     "--force-command", "/bin/true", "--reason", "incident 42: Slack down")
    window = (start, datetime.now(timezone.utc))
    assert rich.returncode == 0, rich
    rich_cert = write_cert(root / "rich-cert.pub", rich)
    serial = listing(rich_cert).serial

    piped_key = user_keys["ecdsa-p256"].public_path.read_text()
    piped = vouch.run("ca", "sign", "-", "--principal", "bob", "--duration", "10m",
                      "--out", "piped-cert.pub", "--reason", "testing", input=piped_key)
    assert piped.returncode == 0, piped
    krl_before = vouch.run("krl")
    revoke_first = vouch.run("revoke", str(serial), "--reason", "laptop stolen")
    revoke_again = vouch.run("revoke", str(serial), "--reason", "laptop stolen")
    after = concurrently({  # read-only from here on
        "krl_out": (vouch, ("krl", "--out", "revoked.krl")),
        "krl_stdout": (vouch, ("krl",)),
        "verify": (vouch, ("audit", "verify")),
        "export": (vouch, ("audit", "export")),
        "export_future": (vouch, ("audit", "export", "--since", "2999-01-01T00:00:00Z")),
    })
    return Story(
        vouch=vouch, root=root, ca_line=ca_line, rich=rich, rich_window=window,
        rich_cert=rich_cert, piped=piped, piped_out=root / "piped-cert.pub", piped_key=piped_key,
        krl_before=krl_before, revoke_first=revoke_first, revoke_again=revoke_again,
        krl_out_path=root / "revoked.krl", **after)


def test_sign_prints_exactly_one_certificate_line(story: Story) -> None:
    assert_no_traceback(story.rich)
    line = one_line(story.rich)
    assert line.startswith("ssh-ed25519-cert-v01@openssh.com AAAA"), story.rich
    base64.b64decode(line.split()[1], validate=True)


def test_sign_certificate_fields(story: Story) -> None:
    shown = listing(story.rich_cert)
    assert shown.type == "ssh-ed25519-cert-v01@openssh.com user certificate"
    assert shown.key_id == "incident-ID"
    assert shown.principals == ["a", "b"]
    assert shown.serial != 0
    assert shown.signing_ca.split()[1] == fingerprint_of(story.ca_line)
    start, end = story.rich_window
    # valid_after = issue time - 60 s, valid_before = issue time + 1h30m (whole seconds)
    lo, hi = start - timedelta(seconds=SLACK), end + timedelta(seconds=SLACK)
    assert lo - timedelta(seconds=BACKDATE) <= shown.valid_from <= hi - timedelta(seconds=BACKDATE)
    granted = timedelta(hours=1, minutes=30)
    assert lo + granted <= shown.valid_to <= hi + granted
    assert shown.valid_to - shown.valid_from == timedelta(hours=1, minutes=30, seconds=BACKDATE)
    assert shown.critical_options == {"force-command": "/bin/true",
                                      "source-address": "10.0.0.0/8,192.0.2.1"}
    assert "permit-pty" in shown.extensions


def test_sign_from_stdin_to_out_file(story: Story) -> None:
    assert_no_traceback(story.piped)
    assert story.piped.out == b"", story.piped  # --out: nothing on stdout
    text = story.piped_out.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.startswith("ecdsa-sha2-nistp256-cert-v01@openssh.com ")
    shown = listing(story.piped_out)
    assert shown.public_key.split()[1] == fingerprint_of(story.piped_key)
    assert shown.principals == ["bob"]
    assert shown.serial not in (0, story.revoked_serial)
    assert shown.valid_to - shown.valid_from == timedelta(minutes=10, seconds=BACKDATE)


def test_krl_with_nothing_revoked_is_valid_and_empty(story: Story) -> None:
    result = story.krl_before
    assert result.returncode == 0, result
    assert_no_traceback(result)
    decoded = decode_krl(result.out)
    assert all(not section.serial_ranges and not section.key_ids
               for section in decoded.certificates)
    assert not decoded.public_keys
    krl = story.root / "empty.krl"
    krl.write_bytes(result.out)
    assert krl_verdict(krl, story.rich_cert) == "ok"
    assert krl_verdict(krl, story.piped_out) == "ok"


def test_revoke_twice_is_not_an_error(story: Story) -> None:
    serial = str(story.revoked_serial)
    first, again = story.revoke_first, story.revoke_again
    for result in (first, again):
        assert result.returncode == 0, result
        assert_no_traceback(result)
        assert serial in result.stdout, result
    assert "already" not in first.stdout.lower(), first
    assert "already revoked" in again.stdout.lower(), again


def test_krl_out_revokes_exactly_the_revoked_certificate(story: Story) -> None:
    result = story.krl_out
    assert result.returncode == 0, result
    assert_no_traceback(result)
    assert result.out == b"", result  # --out: the binary KRL goes to the file only
    assert krl_verdict(story.krl_out_path, story.rich_cert) == "REVOKED"
    assert krl_verdict(story.krl_out_path, story.piped_out) == "ok"
    decoded = decode_krl(story.krl_out_path.read_bytes())
    ca_blob = parse_public_key(story.ca_line).blob
    sections = [s for s in decoded.certificates if s.ca_key == ca_blob]
    assert sections, "no certificate section scoped to this CA"
    assert any(s.revokes_serial(story.revoked_serial) for s in sections)
    assert not any(s.revokes_serial(story.other_serial) for s in decoded.certificates)


def test_krl_stdout_equals_out_file_but_for_the_date(story: Story) -> None:
    result = story.krl_stdout
    assert result.returncode == 0, result
    assert_no_traceback(result)
    from_file = decode_krl(story.krl_out_path.read_bytes())
    from_stdout = decode_krl(result.out)
    assert dataclasses.replace(from_stdout, generated_at=0) == \
        dataclasses.replace(from_file, generated_at=0)
    now = time.time()
    assert now - 600 <= from_stdout.generated_at <= now + 5


def _events(story: Story) -> list[dict]:
    assert story.export.returncode == 0, story.export
    assert_no_traceback(story.export)
    return [json.loads(line) for line in story.export.stdout.splitlines()]


def test_audit_verify_names_the_event_count(story: Story) -> None:
    result = story.verify
    assert result.returncode == 0, result
    assert_no_traceback(result)
    count = len(_events(story))
    assert count >= 3  # two signatures and one revocation
    assert re.search(rf"(?<![\d]){count} event", result.stdout), result


def test_audit_export_has_the_signatures_and_the_revocation(story: Story) -> None:
    events = _events(story)
    revoked, other = str(story.revoked_serial), str(story.other_serial)

    def about(serial: str, event: dict) -> bool:
        return serial in event["subject"] or serial in json.dumps(event["details"])

    actions = [(e["action"], about(revoked, e), about(other, e)) for e in events]
    assert any("sign" in a and r for a, r, _ in actions), actions
    assert any("sign" in a and o for a, _, o in actions), actions
    assert any("revok" in a and r for a, r, _ in actions), actions
    start = story.rich_window[0] - timedelta(seconds=SLACK)
    for event in events:
        assert event["at"].endswith("Z"), event
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00"))
        assert start <= at <= datetime.now(timezone.utc) + timedelta(seconds=SLACK), event


def test_audit_export_since_the_future_is_empty(story: Story) -> None:
    result = story.export_future
    assert result.returncode == 0, result
    assert_no_traceback(result)
    assert result.out == b"", result


def test_audit_verify_detects_tampering(story: Story, tmp_path: Path) -> None:
    copy = tmp_path / "tampered.db"
    src, db = sqlite3.connect(story.root / "vouch.db"), sqlite3.connect(copy)
    try:
        src.backup(db)
        assert db.execute("UPDATE audit_events SET actor='mallory' WHERE seq=1").rowcount == 1
        db.commit()
    finally:
        src.close()
        db.close()
    result = story.vouch.with_env(VOUCH_DATABASE_URL=f"sqlite:///{copy}").run("audit", "verify")
    assert_no_traceback(result)
    assert result.returncode == 1, result
    assert re.search(r"\bevent 1\b", result.err + result.stdout), result


# --- db upgrade --------------------------------------------------------------------------------


def test_db_upgrade_fresh_then_again(tmp_path: Path) -> None:
    from storage.db import head_revision

    vouch = Vouch(tmp_path)
    first = vouch.ok("db", "upgrade")
    assert "upgraded" in first.stdout.lower(), first
    assert head_revision() in first.stdout, first
    second = vouch.ok("db", "upgrade")
    assert "already" in second.stdout.lower(), second
    assert head_revision() in second.stdout, second


def test_a_file_that_is_not_a_database_is_named_not_a_crash(tmp_path: Path, user_keys) -> None:
    """Said in one line; and `ca sign` does not hand out a certificate it cannot record (only an
    unreachable database lets the operator sign without a record)."""
    (tmp_path / "vouch.db").write_bytes(os.urandom(4096))
    vouch = Vouch(tmp_path)
    vouch.ok("ca", "init")
    sign = ("ca", "sign", user_keys["ed25519"].public_path, "--principal", "root",
            "--duration", "1h", "--reason", "testing")
    for args in (("krl",), ("db", "upgrade"), ("audit", "verify"), sign):
        result = vouch.run(*args)
        assert_no_traceback(result)
        assert result.returncode == 1, result
        assert result.err.strip() == "vouch: the database cannot be used: file is not a database", \
            result
        assert b"cert-v01" not in result.out


def test_fresh_database_used_by_several_commands_at_once(tmp_path: Path) -> None:
    """CONTRACT: "a new, empty database is initialised by whichever command first uses it" --
    also when several start together (a cron'd `vouch krl` next to an operator, replicas).
    A race: when it is there, this catches it in roughly half the runs, not every run."""
    vouch = Vouch(tmp_path)
    jobs = {f"verify-{i}": (vouch, ("audit", "verify")) for i in range(6)}
    results = concurrently(jobs, workers=len(jobs))
    for result in results.values():
        assert_no_traceback(result)
        assert result.returncode == 0, result


# --- bad input: exit 2, one line, no traceback -------------------------------------------------

SIGN = ("ca", "sign")
OK_REST = ("--principal", "alice", "--duration", "1h", "--reason", "testing")


def _bad_cases() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """id -> (argv, words the single stderr line must contain)."""
    cases = {
        "missing-pubkey-file": ((*SIGN, "missing.pub", *OK_REST), ("missing.pub",)),
        "dsa-key": ((*SIGN, "dsa.pub", *OK_REST), ("DSA",)),
        "rsa-1024-key": ((*SIGN, "rsa1024.pub", *OK_REST), ("1024",)),
        "certificate-not-key": ((*SIGN, "user-cert.pub", *OK_REST), ("certificate",)),
        "garbage": ((*SIGN, "garbage.pub", *OK_REST), ("key",)),
        "private-key": ((*SIGN, "user", *OK_REST), ("private",)),
        "missing-principal": ((*SIGN, "user.pub", "--duration", "1h", "--reason", "x"),
                              ("--principal",)),
        "missing-reason": ((*SIGN, "user.pub", "--principal", "alice", "--duration", "1h"),
                           ("--reason",)),
        "reason-empty": ((*SIGN, "user.pub", "--principal", "alice", "--duration", "1h",
                          "--reason", "  "), ("--reason",)),
        "duration-over-24h": ((*SIGN, "user.pub", "--principal", "alice", "--duration", "25h",
                               "--reason", "x"), ("24h", "--max-duration-override")),
        "duration-negative-as-option": ((*SIGN, "user.pub", "--principal", "alice",
                                         "--reason", "x", "--duration", "-1h"), ("--duration",)),
        "unknown-subcommand": (("frobnicate",), ("frobnicate",)),
        "revoke-unknown-serial": (("revoke", "12345"), ("12345",)),
        "revoke-serial-zero": (("revoke", "0"), ("serial",)),
        "audit-since-yesterday": (("audit", "export", "--since", "yesterday"),
                                  ("--since", "yesterday")),
        # Empty option values must not fail open (sign without the restriction), and an
        # unwritable output path is the user's mistake (exit 2 naming it), not an "unexpected
        # error" (exit 1) naming a temp file.
        "source-address-empty": ((*SIGN, "user.pub", *OK_REST, "--source-address="),
                                 ("source-address",)),
        "force-command-empty": ((*SIGN, "user.pub", *OK_REST, "--force-command="),
                                ("force-command",)),
        "krl-out-unwritable": (("krl", "--out", "no-such-dir/revoked.krl"),
                               ("no-such-dir/revoked.krl",)),
        "ca-init-key-unwritable": (("ca", "init", "--key", "no-such-dir/ca_key"),
                                   ("no-such-dir/ca_key",)),
        "key-id-empty": ((*SIGN, "user.pub", *OK_REST, "--key-id="), ("--key-id",)),
        "two-keys-in-one-file": ((*SIGN, "two.pub", *OK_REST), ("2 lines",)),
        # Checked before signing: a certificate nobody receives must not enter the audit log.
        "sign-out-unwritable": ((*SIGN, "user.pub", *OK_REST, "--out", "no-such-dir/c.pub"),
                                ("no-such-dir",)),
    }
    for duration in ("2 hours", "-1h", "0s", "1.5h", ""):
        cases[f"duration-{duration or 'empty'}"] = (
            (*SIGN, "user.pub", "--principal", "alice", "--reason", "x", f"--duration={duration}"),
            ("duration", duration))
    for address in ("10.0.0.1/8", "nonsense"):
        cases[f"source-address-{address}"] = (
            (*SIGN, "user.pub", *OK_REST, "--source-address", address),
            ("source-address", address))
    return cases


BAD_CASES = _bad_cases()


def _dsa_public_line(root: Path) -> str:
    made = keygen("-q", "-t", "dsa", "-N", "", "-f", root / "dsa", check=False)
    if made.returncode == 0:
        return (root / "dsa.pub").read_text()
    # OpenSSH built without DSA: a well-formed ssh-dss blob (p, q, g, y) of random numbers.
    fields = [int.from_bytes(os.urandom(n), "big") | 1 << (8 * n - 1) for n in (128, 20, 128, 128)]
    blob = put_string("ssh-dss") + b"".join(put_mpint(f) for f in fields)
    return f"ssh-dss {base64.b64encode(blob).decode()} crafted-dsa\n"


@dataclass
class Batch:
    root: Path
    results: dict[str, Result]


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Batch:
    """Every bad-input invocation, run concurrently (each is an independent process)."""
    root = tmp_path_factory.mktemp("batch")
    vouch = Vouch(root)
    vouch.ok("ca", "init")
    vouch.ok("db", "upgrade")  # before the concurrent commands that use the database
    keygen("-q", "-t", "ed25519", "-N", "", "-C", "user", "-f", root / "user")
    keygen("-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", root / "rsa1024")
    (root / "dsa.pub").write_text(_dsa_public_line(root))
    keygen("-q", "-t", "ed25519", "-N", "", "-f", root / "other_ca")
    shutil.copy(root / "user.pub", root / "for-cert.pub")
    keygen("-q", "-s", root / "other_ca", "-I", "x", "-n", "alice", "-V", "+1h",
           root / "for-cert.pub")
    shutil.move(root / "for-cert-cert.pub", root / "user-cert.pub")
    (root / "garbage.pub").write_text("this is not an ssh key at all\n")
    (root / "two.pub").write_text((root / "user.pub").read_text() * 2)

    return Batch(root, concurrently({k: (vouch, argv) for k, (argv, _) in BAD_CASES.items()}))


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exits_2_with_one_line(batch, case: str) -> None:
    _, words = BAD_CASES[case]
    result = batch.results[case]
    if result.returncode == 0 and result.out.startswith(b"ssh-"):  # it signed: show what
        shown = listing(write_cert(batch.root / f"{case}-cert.pub", result))
        pytest.fail(f"bad input was signed, critical options {shown.critical_options}{result}")
    assert_bad_input(result, *[w for w in words if w])


# --- the README's promise, end to end, against a real sshd -------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("ca_kind", ["file", "softhsm2"])
def test_sign_login_revoke_refused(request, tmp_path: Path, user_keys, ca_kind: str) -> None:
    require_sshd()
    if ca_kind == "file":
        vouch = Vouch(tmp_path)
    else:  # the README's SoftHSM2 set-up: URI without PIN, module and PIN in the environment
        softhsm = request.getfixturevalue("softhsm")
        label = f"cli-e2e-{uuid.uuid4().hex[:8]}"
        vouch = Vouch(tmp_path, SOFTHSM2_CONF=str(softhsm.conf),
                      VOUCH_CA_KEY=f"pkcs11:token={softhsm.label};object={label}",
                      VOUCH_PKCS11_MODULE=softhsm.module, VOUCH_PKCS11_PIN=softhsm.pin)
    vouch.ok("ca", "init")
    ca_line = one_line(vouch.ok("ca", "pubkey"))
    user = user_keys["ed25519"]
    signed = vouch.ok("ca", "sign", user.public_path, "--principal", DEFAULT_USER,
                      "--duration", "10m", "--key-id", f"e2e-{ca_kind}", "--reason", "testing")
    cert = write_cert(tmp_path / "id_ed25519-cert.pub", signed)
    serial = listing(cert).serial
    empty_krl = vouch.ok("krl").out

    with Sshd(tmp_path / "sshd", trusted_ca_keys=[ca_line], revoked_keys=empty_krl) as sshd:
        before = sshd.login(user.private, cert)
        assert before.ok, f"{before.stderr}\n{before.sshd_log}"
        assert f'Accepted certificate ID "e2e-{ca_kind}" (serial {serial})' in before.sshd_log

        revoked = vouch.ok("revoke", str(serial), "--reason", "end-to-end test")
        assert str(serial) in revoked.stdout
        vouch.ok("krl", "--out", tmp_path / "revoked.krl")
        sshd.set_revoked_keys((tmp_path / "revoked.krl").read_bytes())

        after = sshd.login(user.private, cert)
        assert not after.ok, after.sshd_log
        assert re.search(r"^Authentication key ED25519-CERT SHA256:\S+ revoked by file ",
                         after.sshd_log, re.M), after.sshd_log


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    assert Vouch(tmp_path).ok("--version").stdout == f"vouch {version('vouch')}\n"


def test_ca_sign_refuses_what_it_cannot_record_unless_told(tmp_path: Path, user_keys) -> None:
    vouch = Vouch(tmp_path)
    vouch.ok("ca", "init")
    sign = ("ca", "sign", user_keys["ed25519"].public_path, "--principal", "root",
            "--duration", "1h", "--reason", "Slack is down")
    unreachable = vouch.with_env(VOUCH_DATABASE_URL="postgresql+psycopg://vouch@127.0.0.1:1/vouch")
    refused = unreachable.run(*sign)
    assert_no_traceback(refused)
    assert refused.returncode == 1 and refused.out == b"", refused
    assert "not signed" in refused.err and "--no-record" in refused.err, refused
    forced = unreachable.run(*sign, "--no-record")
    assert forced.returncode == 0 and "cannot be revoked by its serial" in forced.err, forced
    assert "-cert-v01@openssh.com" in one_line(forced)
    long = vouch.run(*sign[:-4], "--duration", "36h", "--reason", "a long incident",
                     "--max-duration-override")
    assert long.returncode == 0, long
    events = [json.loads(line) for line in vouch.ok("audit", "export").stdout.splitlines()]
    [signed] = [e for e in events if e["action"] == "certificate.signed_direct"]
    assert signed["details"]["reason"] == "a long incident"


def test_the_database_and_the_keys_are_private_and_a_readable_ca_key_is_refused(tmp_path: Path):
    vouch = Vouch(tmp_path)
    vouch.ok("ca", "init")
    vouch.ok("krl")
    for name in ("vouch.db", "ca_key", "audit_key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    (tmp_path / "ca_key").chmod(0o640)
    assert_bad_input(vouch.run("ca", "pubkey"), "can be read by others", "chmod 600")


def test_ca_init_never_makes_a_file_of_a_uri_spelled_differently(tmp_path: Path) -> None:
    vouch = Vouch(tmp_path)
    for spelled in ("PKCS11:token=vouch;object=ca", " pkcs11:token=vouch;object=ca"):
        result = vouch.run("ca", "init", "--key", spelled)
        assert_bad_input(result, "module-path")  # taken for a token: it wants the module
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- policy check: warnings ----------------------------------------------------------------

WARNED_POLICY = """\
security_channel: C0SECURITY
targets:
  pair:
    principals: [pair]
    max_duration: 1h
    approvers: [U0ANN, U0BEN]
    approvals_required: 2
  solo:
    principals: [solo]
    max_duration: 10d
    approvers: [U0ANN]
    requesters: [U0ANN]
  fine:
    principals: [fine]
    max_duration: 7d
    approvers: [U0ANN, "@sre"]
    approvals_required: 3
breakglass:
  users: [U0ANN]
  max_duration: 8d
  targets: ["*"]
"""


def test_policy_check_warns_of_what_can_never_work_and_still_passes(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(WARNED_POLICY)
    result = Vouch(tmp_path).run("policy", "check", policy)
    assert_no_traceback(result)
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"{policy}: ok (3 target(s)"), result
    lines = result.err.splitlines()
    assert [line.split(": warning: ")[0] for line in lines] == [
        f"{policy}:7", f"{policy}:10", f"{policy}:11", f"{policy}:20"], result
    assert "a request by U0ANN or U0BEN can never be approved" in lines[0]
    assert "max_duration 10d is longer than 7 days" in lines[1]
    assert "target 'solo' can never be approved: every requester is one of its 1" in lines[2]
    assert "breakglass max_duration 8d is longer than 7 days" in lines[3]


def test_policy_check_errors_still_exit_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(WARNED_POLICY.replace("approvals_required: 2", "approvals_required: 3"))
    result = Vouch(tmp_path).run("policy", "check", policy)
    assert_no_traceback(result)
    assert result.returncode == 2, result
    assert result.err.splitlines() == [
        f"{policy}:7: target 'pair': approvals_required is 3 but only 2 approver(s) are listed"]


def test_a_certificate_revoked_before_a_ca_rotation_stays_revoked(tmp_path: Path, user_keys) -> None:
    """Hosts trust the old and the new CA during a rotation: a certificate the old CA signed
    and Vouch revoked must stay in the KRL once Vouch signs with the new CA."""
    vouch = Vouch(tmp_path)
    vouch.ok("ca", "init")
    old_cert, kept_cert = tmp_path / "old-cert.pub", tmp_path / "kept-cert.pub"
    for out in (old_cert, kept_cert):
        vouch.ok("ca", "sign", user_keys["ed25519"].public_path, "--principal", "ops",
                 "--duration", "1h", "--reason", "before the rotation", "--out", out)
    vouch.ok("revoke", str(listing(old_cert).serial), "--reason", "laptop stolen")
    vouch.ok("ca", "init", "--force")  # the rotation: Vouch now signs with a new key
    new_cert = tmp_path / "new-cert.pub"
    vouch.ok("ca", "sign", user_keys["ed25519"].public_path, "--principal", "ops",
             "--duration", "1h", "--reason", "after the rotation", "--out", new_cert)
    vouch.ok("revoke", str(listing(new_cert).serial))
    krl = tmp_path / "rotated.krl"
    vouch.ok("krl", "--out", krl)
    assert krl_verdict(krl, old_cert) == "REVOKED"
    assert krl_verdict(krl, new_cert) == "REVOKED"
    assert krl_verdict(krl, kept_cert) == "ok"
