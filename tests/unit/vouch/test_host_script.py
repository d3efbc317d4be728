"""The text of `vouch host-setup`, without running it (tests/integration runs it)."""

from __future__ import annotations

from vouch.host_setup import host_setup

CA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_a_principal_with_a_dollar_is_quoted_for_the_shell():
    # Policy principals may hold "$" (Samba's "HOST$" accounts); unquoted, sh would expand it.
    script = host_setup(CA, "https://vouch.example", target="t", principals=("svc$db",))
    assert "echo 'svc$db' > '/etc/ssh/auth_principals/svc$db'\n" in script


def test_the_url_is_baked_into_the_fetcher():
    script = host_setup(CA, "https://vouch.example/base", target=None, principals=())
    assert "URL=${VOUCH_KRL_URL:-'https://vouch.example/base/krl'}\n" in script
