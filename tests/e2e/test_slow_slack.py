"""No Slack call inside a database transaction: while Slack takes 2 s to answer who is in a user
group (one approver's vote needs it), other people's requests and votes go through at once.

Before the core resolved groups ahead of its transactions, the slow vote held SQLite's write lock
for the whole round trip and everyone else waited behind it.
"""

from __future__ import annotations

import threading
import time

import pytest

from e2e_support import BOB, CAROL, DAN, REQUESTER, Server, make_fake, policy_yaml, settle
from test_bot import REQUESTS, ask, ok, register_key, request_message, state, wait_dm, wait_state

SLOW = 2.0
QUICK = 1.0  # a request posted or a certificate delivered while the slow lookup is under way


@pytest.fixture
def server(tmp_path, user_keys):
    fake = make_fake()
    srv = Server(tmp_path / "vouch", fake, policy_yaml())
    srv.start()
    for user, key in ((REQUESTER, "ed25519"), (DAN, "ecdsa-p256")):
        register_key(srv, user, user_keys[key])
    settle(fake)
    yield srv
    srv.stop()
    fake.stop()


def test_a_slow_group_lookup_holds_nobody_else_up(server):
    fake = server.fake
    slow_id, slow_message = ask(server, REQUESTER, "prod-db", "1h", "slow approver's request")
    other_id, other_message = ask(server, DAN, "prod-db", "1h", "bob approves this one")
    settle(fake)
    fake.delay("usergroups.users.list", SLOW)

    # CAROL approves through @db-owners: Vouch must ask Slack who is in it, which takes SLOW.
    voting = threading.Thread(target=lambda: ok(server.driver.click_button(
        CAROL, channel=REQUESTS, ts=slow_message.ts, label="Approve")))
    voting.start()
    fake.wait_for(lambda: fake.waiting("usergroups.users.list"), timeout=5)
    began = time.monotonic()

    # Meanwhile BOB (an approver by user ID) approves DAN's request, and REQUESTER asks again.
    ok(server.driver.click_button(BOB, channel=REQUESTS, ts=other_message.ts, label="Approve"))
    ok(server.driver.command(REQUESTER, "/ssh-request", "prod-db 30m asked meanwhile"))
    wait_dm(fake, DAN, other_id, timeout=SLOW)
    delivered = time.monotonic() - began
    request_message(server, "asked meanwhile", timeout=SLOW)
    posted = time.monotonic() - began
    assert state(server, slow_id) == "pending", "the slow lookup should still be under way"
    assert delivered < QUICK and posted < QUICK, (delivered, posted)

    voting.join(timeout=10)
    wait_state(server, slow_id, "issued", timeout=SLOW + 5)
    assert wait_dm(fake, REQUESTER, slow_id)
