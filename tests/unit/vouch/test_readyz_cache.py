"""vouch.web.Cached: /readyz's test signature runs at most once per TTL, however many probes come."""

from __future__ import annotations

import threading

from vouch.web import Cached


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Check:
    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.answers.pop(0)


def test_an_answer_is_reused_until_the_ttl_is_over():
    clock, check = Clock(), Check(None, "the token is unplugged", None)
    cached = Cached(check, ttl=5.0, clock=clock)
    assert [cached() for _ in range(100)] == [None] * 100
    assert check.calls == 1
    clock.now += 4.9
    assert cached() is None and check.calls == 1
    clock.now += 0.1
    assert cached() == "the token is unplugged" and check.calls == 2
    clock.now += 4.9
    assert cached() == "the token is unplugged" and check.calls == 2  # a failure is cached too
    clock.now += 0.1
    assert cached() is None and check.calls == 3


def test_concurrent_probes_share_one_check():
    release = threading.Event()
    calls = []

    def slow() -> str | None:
        calls.append(1)
        release.wait(5)  # a token taking its time over the test signature
        return None

    cached = Cached(slow, ttl=5.0)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(cached())) for _ in range(20)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert answers == [None] * 20
    assert len(calls) == 1
