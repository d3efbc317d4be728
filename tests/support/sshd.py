"""A throwaway OpenSSH server on 127.0.0.1 for certificate-login tests.

``Sshd`` writes a minimal sshd_config into a work directory, starts
``/usr/sbin/sshd -D -e`` in the foreground as our child process (made a child
subreaper, so the processes its connections leave behind are reaped by sshd
instead of lingering as zombies under a container init), reads its log from
stderr on a background thread, and offers ``login()`` which runs the real
``ssh`` client with a given private key + certificate and reports whether the
login worked together with the sshd log lines written for that attempt.

Needs root (sshd must run as root to change to the login user) and the
openssh-server / openssh-client packages; ``require_sshd()`` skips otherwise.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ca.krl import write_atomic

SSHD = "/usr/sbin/sshd"  # sshd refuses to run unless started by absolute path
LOGIN_MARKER = "vouch-login-ok"
DEFAULT_USER = "vouchtest"

_START_TIMEOUT = 10.0  # seconds for sshd to report it is listening
_LOGIN_TIMEOUT = 20.0  # seconds for one ssh client run
_LOG_SETTLE_TIMEOUT = 5.0  # seconds to wait for sshd's closing line of an attempt
_PR_SET_CHILD_SUBREAPER = 36
_USER_LOCK = "/tmp/.vouch-test-useradd.lock"

# sshd's first and last lines for one connection; the groups capture the client's port.
_CONN_FROM_RE = re.compile(r"^Connection from \S+ port (\d+) on ")
_CONN_END_RE = re.compile(
    r"^(?:Disconnected from .* port (\d+)"
    r"|Connection closed by .* port (\d+)"
    r"|Connection reset by .* port (\d+)"
    r"|Disconnecting .* port (\d+)"
    r"|Timeout before authentication for .* port (\d+))"
)


class SshdError(RuntimeError):
    """sshd could not be started (the message carries its log)."""


@dataclass
class LoginResult:
    ok: bool  # ssh exited 0 and the remote command printed the expected marker
    stdout: str
    stderr: str  # ssh client's stderr
    sshd_log: str  # the sshd log lines produced during this attempt
    returncode: int | None = None  # ssh's exit status (None: timed out)


# --------------------------------------------------------------------------- helpers


def require_sshd() -> None:
    """``pytest.skip`` unless this process can run a real sshd and ssh client."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("sshd integration tests need root (sshd switches to the login user)")
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} not found (apt-get install openssh-server)")
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found on PATH (apt-get install openssh-client)")


def _shadow_field(name: str) -> str | None:
    try:
        with open("/etc/shadow", encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if parts and parts[0] == name:
                    return parts[1] if len(parts) > 1 else ""
    except OSError:
        return None
    return None


def _run_retrying(cmd: list[str], ok_codes: tuple[int, ...], what: str) -> None:
    """Run a shadow-utils command, retrying while /etc/passwd is locked by someone else."""
    last = None
    for attempt in range(20):
        last = subprocess.run(cmd, capture_output=True, text=True)
        if last.returncode in ok_codes:
            return
        # 10: "cannot lock /etc/passwd; try again later" (another useradd/usermod).
        if last.returncode == 10 or "lock" in last.stderr.lower():
            time.sleep(0.1 * (attempt + 1))
            continue
        break
    assert last is not None
    raise RuntimeError(f"{what} failed (exit {last.returncode}): {last.stderr.strip()}")


def ensure_test_user(name: str = DEFAULT_USER) -> str:
    """Make sure local account ``name`` exists and can log in with a key (no PAM).

    Idempotent and safe when several test processes call it at once: the work is
    serialised with a file lock, "already exists" is tolerated and a locked
    passwd database is retried. Debian creates accounts with a ``!`` password
    (locked), which sshd refuses when ``UsePAM no``; it is set to ``*`` (no
    password, but not locked).
    """
    with open(_USER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _shadow_field(name) is None:
                # 0: created; 9: username already in use (someone else won the race).
                _run_retrying(
                    ["useradd", "-m", "-s", "/bin/sh", name], (0, 9), f"useradd {name}"
                )
            field = _shadow_field(name)
            if field is None or field.startswith("!") or field == "":
                _run_retrying(["usermod", "-p", "*", name], (0,), f"usermod -p '*' {name}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LIBC = ctypes.CDLL(None, use_errno=True)  # resolved here, not in the forked child


def _become_subreaper() -> None:
    """Run in the sshd child before exec: make sshd the reaper of its orphans.

    After a session ends, sshd's privileged monitor exits without waiting for
    the unprivileged user child, which is then re-parented to PID 1; in a
    container whose init does not reap promptly it lingers as a zombie.  As a
    child subreaper (kept across execve) the sshd listener inherits those
    orphans instead, and its SIGCHLD handler reaps them with waitpid(-1).
    """
    _LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _descendants(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..." -- comm may contain spaces/parens.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


# --------------------------------------------------------------------------- Sshd


class Sshd:
    """A private sshd on 127.0.0.1:<free port> that trusts the given user CAs.

    Files (config, host key, CA keys, KRL, pid file, full log) live in
    ``workdir``; the principals files live in a world-readable temp directory
    because sshd reads AuthorizedPrincipalsFile as the login user, who usually
    cannot traverse a 0700 pytest temp directory.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        trusted_ca_keys: list[str],
        principals: dict[str, list[str]] | None = None,
        revoked_keys: bytes | None = None,
        user: str = DEFAULT_USER,
        log_level: str = "VERBOSE",
        host_certificate: Path | None = None,
    ) -> None:
        if not trusted_ca_keys:
            raise ValueError("trusted_ca_keys must name at least one CA public key")
        self.workdir = Path(workdir).absolute()
        self.user = user
        self.trusted_ca_keys = list(trusted_ca_keys)
        self.principals = dict(principals) if principals is not None else {user: [user]}
        self.revoked_keys = revoked_keys
        self.log_level = log_level
        # Presented with the host key (HostCertificate): a certificate of host_key_path.
        self.host_certificate = host_certificate
        self.port: int = 0
        self.config_path = self.workdir / "sshd_config"
        self.host_key_path = self.workdir / "ssh_host_ed25519_key"
        self.ca_keys_path = self.workdir / "trusted_user_ca_keys"
        self.krl_path = self.workdir / "revoked_keys"
        self.pid_path = self.workdir / "sshd.pid"
        self.log_path = self.workdir / "sshd.log"
        self._principals_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._login_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> "Sshd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log(self) -> str:
        """Everything sshd has logged so far."""
        with self._cond:
            return "".join(self._lines)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "Sshd":
        if self._proc is not None:
            raise RuntimeError("sshd already started")
        ensure_test_user(self.user)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privsep chroot dir
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_files()
            self.log_path.write_bytes(b"")
            for attempt in range(3):  # the free port can be taken between probe and bind
                self.port = _free_port()
                self._write_config()
                try:
                    self._spawn()
                    return self
                except SshdError as e:
                    if "Address already in use" not in str(e) or attempt == 2:
                        raise
        except BaseException:
            self._cleanup_dirs()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                # End unfinished connections first, while the listener (their
                # subreaper) is still alive to reap them; then the listener.
                _end_processes(_descendants(proc.pid))
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if self._reader is not None:
                self._reader.join(timeout=5)
                self._reader = None
        self._cleanup_dirs()

    # -- configuration -----------------------------------------------------------

    def _write_files(self) -> None:
        if not self.host_key_path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vouch-test-host",
                 "-f", str(self.host_key_path)],
                check=True, capture_output=True,
            )
        write_atomic(
            self.ca_keys_path,
            "".join(k.strip() + "\n" for k in self.trusted_ca_keys).encode(),
        )
        if self.revoked_keys is not None:
            write_atomic(self.krl_path, self.revoked_keys)
        self._principals_dir = Path(tempfile.mkdtemp(prefix="vouch-sshd-principals-"))
        os.chmod(self._principals_dir, 0o755)
        for login_user, names in self.principals.items():
            self.set_principals(login_user, names)

    def set_principals(self, login_user: str, names: list[str]) -> None:
        """(Re)write the AuthorizedPrincipalsFile of ``login_user``; read per login."""
        if self._principals_dir is None:
            raise RuntimeError("call start() first")
        self.principals[login_user] = list(names)
        write_atomic(
            self._principals_dir / login_user, "".join(n + "\n" for n in names).encode()
        )

    def _write_config(self) -> None:
        assert self._principals_dir is not None
        lines = [
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.pid_path}",
            "UsePAM no",
            "StrictModes no",
            f"LogLevel {self.log_level}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitRootLogin no",
            "AuthorizedKeysFile none",
            f"TrustedUserCAKeys {self.ca_keys_path}",
            f"AuthorizedPrincipalsFile {self._principals_dir}/%u",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "UseDNS no",
            "LoginGraceTime 15",
            "MaxStartups 100",
        ]
        if self.revoked_keys is not None:
            lines.append(f"RevokedKeys {self.krl_path}")
        if self.host_certificate is not None:
            lines.append(f"HostCertificate {Path(self.host_certificate).absolute()}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def set_revoked_keys(self, krl: bytes) -> None:
        """Atomically replace the RevokedKeys file; sshd re-reads it for every key check."""
        if self.revoked_keys is None:
            raise RuntimeError(
                "this sshd was started without RevokedKeys; pass revoked_keys= "
                "(e.g. an empty KRL) to the constructor to be able to change it later"
            )
        self.revoked_keys = krl
        self.krl_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.krl_path, krl)

    # -- process -------------------------------------------------------------------

    def _spawn(self) -> None:
        with self._cond:
            self._lines = []
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=True,
            preexec_fn=_become_subreaper,
        )
        self._proc = proc
        self._reader = threading.Thread(
            target=self._read_log, args=(proc,), name=f"sshd-log-{proc.pid}", daemon=True
        )
        self._reader.start()
        # Ready when sshd logs that it listens (logged after listen()); a TCP probe
        # would leave a stray connection in the log, so it is only used when the
        # log level hides that INFO line.
        quiet = self.log_level.upper() in ("QUIET", "FATAL", "ERROR")
        deadline = time.monotonic() + _START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if (self._port_open() if quiet else self._listening()):
                return
            with self._cond:
                self._cond.wait(timeout=0.05)
        # Died or never became ready: collect its output and fail loudly.
        self._proc = None
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        raise SshdError(
            f"sshd did not start (exit status {proc.returncode}, port {self.port}):\n"
            f"{self.log}\n--- {self.config_path} ---\n{self.config_path.read_text()}"
        )

    def _listening(self) -> bool:
        ready = f"Server listening on 127.0.0.1 port {self.port}."
        with self._cond:
            return any(line.startswith(ready) for line in self._lines)

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with open(self.log_path, "ab") as logf:
            for raw in iter(proc.stderr.readline, b""):
                logf.write(raw)
                logf.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n") + "\n"
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        proc.stderr.close()
        with self._cond:
            self._cond.notify_all()

    def _cleanup_dirs(self) -> None:
        if self._principals_dir is not None:
            shutil.rmtree(self._principals_dir, ignore_errors=True)
            self._principals_dir = None

    # -- logins --------------------------------------------------------------------------

    def login(
        self,
        private_key: Path,
        certificate: Path,
        *,
        user: str | None = None,
        source: str = "127.0.0.1",
        known_hosts: Path | None = None,
        host_alias: str | None = None,
    ) -> LoginResult:
        """Try ``ssh user@127.0.0.1 echo vouch-login-ok`` with ``private_key`` + ``certificate``.

        ``source`` is the local address the client binds to (any 127.0.0.0/8
        address works on Linux loopback), for source-address tests.
        ``known_hosts``: check the server's host key strictly against this file
        (StrictHostKeyChecking yes) under the name ``host_alias`` (HostKeyAlias),
        instead of accepting any host key.
        Logins on one Sshd are serialised so that ``sshd_log`` holds exactly
        this attempt's lines.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"sshd is not running; log so far:\n{self.log}")
        user = user or self.user
        private_key = Path(private_key).absolute()
        certificate = Path(certificate).absolute()
        os.chmod(private_key, 0o600)  # ssh ignores group/world-readable keys
        cmd = [
            "ssh", "-F", "/dev/null",
            "-i", str(private_key),
            "-o", f"CertificateFile={certificate}",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", f"StrictHostKeyChecking={'yes' if known_hosts else 'no'}",
            "-o", "UserKnownHostsFile="
                  + (str(Path(known_hosts).absolute()) if known_hosts else "/dev/null"),
            "-o", "GlobalKnownHostsFile=/dev/null",
            *(["-o", f"HostKeyAlias={host_alias}"] if host_alias else []),
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5",
            "-o", "PreferredAuthentications=publickey",
            "-o", f"BindAddress={source}",
            "-p", str(self.port),
            f"{user}@127.0.0.1",
            "echo", LOGIN_MARKER,
        ]  # fmt: skip
        with self._login_lock:
            with self._cond:
                start = len(self._lines)
            try:
                cp = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=_LOGIN_TIMEOUT,
                )
                rc: int | None = cp.returncode
                out, err = cp.stdout, cp.stderr
            except subprocess.TimeoutExpired as e:
                rc = None
                out = _text(e.stdout)
                err = _text(e.stderr) + f"\n[harness] ssh timed out after {_LOGIN_TIMEOUT}s"
            sshd_log = self._attempt_log(start, source)
        ok = rc == 0 and LOGIN_MARKER in out.split()
        return LoginResult(ok=ok, stdout=out, stderr=err, sshd_log=sshd_log, returncode=rc)

    def _attempt_log(self, start: int, source: str) -> str:
        """Lines sshd logged for the connection made after line ``start``.

        The connection is found by its "Connection from <source> port N" line and
        is complete once sshd logs its closing line for port N (or after a short
        timeout). Opening/closing lines of other connections are dropped.
        """
        # Below INFO sshd logs no "Connection from" line to wait for.
        quiet = self.log_level.upper() in ("QUIET", "FATAL", "ERROR")
        deadline = time.monotonic() + (0.2 if quiet else _LOG_SETTLE_TIMEOUT)
        with self._cond:
            while True:
                lines = self._lines[start:]
                port = None
                for line in lines:
                    m = _CONN_FROM_RE.match(line)
                    if m and line.startswith(f"Connection from {source} "):
                        port = m.group(1)
                        break
                if port is not None:
                    chosen = [ln for ln in lines if not _other_conn(ln, port)]
                    if any(_ends_conn(ln, port) for ln in chosen):
                        return "".join(chosen)
                if time.monotonic() > deadline or self._proc is None:
                    return "".join(lines if port is None else chosen)
                self._cond.wait(timeout=0.05)


def _ends_conn(line: str, port: str) -> bool:
    m = _CONN_END_RE.match(line)
    return bool(m) and port in m.groups()


def _other_conn(line: str, port: str) -> bool:
    """True for a line that clearly names a different client port."""
    m = _CONN_FROM_RE.match(line)
    if m:
        return m.group(1) != port
    m = _CONN_END_RE.match(line)
    if m:
        return port not in m.groups()
    return False


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _end_processes(pids: list[int], timeout: float = 2.0) -> None:
    """SIGTERM, then SIGKILL, the given sshd processes (checked by name against PID reuse)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"sshd" not in f.read():
                        continue
                os.kill(pid, sig)
                live.append(pid)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while live and time.monotonic() < deadline:
            live = [p for p in live if _alive(p)]
            time.sleep(0.02)
        if not live:
            return
        pids = live


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")
