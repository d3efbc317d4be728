"""storage.hosts on SQLite and PostgreSQL, under access.hosts: a token is stored as its hash and
spent once even when hosts race for it through separate connections; certificates are found by
key and serial (all 64 bits), and revoked ones reach the KRL in their host CA's section."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from access import hosts, revoking
from access.context import Access
from access.signed_calls import Unauthorized
from ca.cert import HostCa
from ca.krl import decode_krl
from ca.signer import FileSigner
from storage.store import SqlStore
from support.audit import AUDIT_KEY

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def line(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()


def access_on(database) -> Access:
    user_ca = FileSigner(ec.generate_private_key(ec.SECP256R1()))
    return Access(SqlStore(database, AUDIT_KEY), user_ca, clock=lambda: NOW)


def test_racing_hosts_with_one_token_get_one_set_of_certificates(database):
    access = access_on(database)
    host_ca = HostCa(FileSigner(ed25519.Ed25519PrivateKey.generate()))
    token, _ = hosts.create_token(access, names=["db1.example.com"], ttl=timedelta(hours=1),
                                  actor="cli:root")
    with database.transaction() as connection:
        stored = connection.exec_driver_sql("SELECT token_hash, hostnames FROM host_tokens").all()
    assert len(stored) == 1 and token not in repr(stored)
    keys = [[line(ed25519.Ed25519PrivateKey.generate())] for _ in range(6)]
    start, outcomes = threading.Barrier(len(keys)), []

    def enrol(public_keys) -> None:
        start.wait()
        try:
            hosts.enrol(access, host_ca, token=token, public_keys=public_keys)
            outcomes.append(public_keys[0])
        except Unauthorized:
            outcomes.append("refused")

    threads = [threading.Thread(target=enrol, args=(k,)) for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [o for o in outcomes if o != "refused"]
    assert outcomes.count("refused") == len(keys) - 1
    with database.transaction() as connection:
        certified = connection.exec_driver_sql(
            "SELECT subject_key, enrolled_via FROM host_certificates").all()
        spent = connection.exec_driver_sql("SELECT used_at, used_by FROM host_tokens").one()
    assert [tuple(row) for row in certified] == [(winner, "token")]
    assert spent[0] is not None and spent[1].startswith("SHA256:")


def test_revoked_host_certificates_are_found_by_key_and_serial_and_reach_the_krl(database):
    access = access_on(database)
    host_ca = HostCa(FileSigner(ec.generate_private_key(ec.SECP256R1())))
    key_line = line(ed25519.Ed25519PrivateKey.generate())
    token, _ = hosts.create_token(access, names=["db2"], ttl=timedelta(hours=1), actor="t")
    [certificate] = hosts.enrol(access, host_ca, token=token, public_keys=[key_line]).certificates
    serial = certificate.spec.serial
    with access.unit(read_only=True) as unit:
        [found] = unit.hosts.of_keys([certificate.spec.public_key.fingerprint])
        assert unit.hosts.by_serial(serial) == found
    assert found.public_key == key_line and found.hostnames == ("db2",)
    assert found.ca_key == host_ca.public_key.line() and found.via == "token"
    [done] = revoking.revoke(access, str(serial), actor="cli:root", reason="leaked").certificates
    assert done.host and done.newly
    with access.unit(read_only=True) as unit:
        revoked, version = unit.hosts.revoked(NOW)
    assert [c.serial for c in revoked] == [serial] and version == 1
    [section] = decode_krl(revoking.krl(access).data).certificates
    assert section.ca_key == host_ca.public_key.blob and section.revokes_serial(serial)
    assert hosts.known_hosts(access, host_ca, "*").splitlines()[1] == f"@revoked * {key_line}"
