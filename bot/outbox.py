"""Posts to a channel go out one at a time from that channel's own worker thread.

Slack allows about one message per second per channel and answers bursts with 429; a listener
that waited its turn would hold a worker thread for the whole queue (and approvals would wait
behind a burst of requests). Listeners hand the post over and return at once instead.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("vouch.outbox")


class Outbox:
    def __init__(self) -> None:
        self._queues: dict[str, queue.Queue] = {}
        self._guard = threading.Lock()

    def submit(self, channel: str, job: Callable[[], object]) -> None:
        with self._guard:
            jobs = self._queues.get(channel)
            if jobs is None:
                jobs = self._queues[channel] = queue.Queue()
                threading.Thread(target=self._drain, args=(channel, jobs), daemon=True,
                                 name=f"vouch-outbox-{channel}").start()
        jobs.put(job)

    def _drain(self, channel: str, jobs: queue.Queue) -> None:
        while True:
            job = jobs.get()
            try:
                job()
            except Exception:  # noqa: BLE001 - one failed post must not stop the channel's queue
                log.exception("posting to %s failed", channel)
