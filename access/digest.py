"""The daily digest for the security channel: what happened in the last 24 hours."""

from __future__ import annotations

from datetime import datetime, timedelta

from access.context import Access
from access.ports import Activity

DIGEST_WINDOW = timedelta(hours=24)


def activity(access: Access, *, until: datetime) -> Activity:
    with access.unit(read_only=True) as unit:
        return unit.reports.activity(until - DIGEST_WINDOW, until)
