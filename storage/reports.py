"""What happened in a window of time (access.ports.Reports), for the daily digest: a few GROUP BY
queries, each through an index that holds the window's rows (storage.models), so a day costs the
same after years of history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from access.ports import Activity
from access.requests import Kind, Request, State
from storage.models import CertificateRecord, RequestRecord
from storage.requests import REQUEST_COLUMNS, from_row, in_state, of_kind

_C = CertificateRecord.__table__.c
_R = RequestRecord.__table__.c
_DIRECT = "(signed directly)"


class SqlReports:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _counts(self, statement) -> dict[str, int]:
        return {target or _DIRECT: count for target, count in self.connection.execute(statement)}

    def activity(self, since: datetime, until: datetime) -> Activity:
        # A request's issued_at is its certificate's (one unit writes both): no join needed,
        # and ix_requests_issued alone answers it.
        issued = (select(_R.target, func.count())
                  .where(of_kind(Kind.REQUEST), _R.issued_at >= since, _R.issued_at < until)
                  .group_by(_R.target))
        # ix_certificates_revoked
        revoked = (select(_R.target, func.count())
                   .select_from(CertificateRecord.__table__.outerjoin(
                       RequestRecord.__table__, _R.id == _C.request_id))
                   .where(_C.revoked_at >= since, _C.revoked_at < until).group_by(_R.target))

        def decided(state: State):  # ix_requests_denied, ix_requests_expired
            return (select(_R.target, func.count())
                    .where(in_state(state), _R.decided_at >= since, _R.decided_at < until)
                    .group_by(_R.target))

        return Activity(issued=self._counts(issued), denied=self._counts(decided(State.DENIED)),
                        expired=self._counts(decided(State.EXPIRED)),
                        revoked=self._counts(revoked), breakglass=self._uses(since, until))

    def _uses(self, since: datetime, until: datetime) -> list[Request]:
        # Unreviewed and reviewed apart, each through an index of its own
        # (ix_requests_breakglass_unreviewed, ix_requests_breakglass_reviewed).
        uses = [from_row(row) for reviewed in (_R.reviewed_at.is_(None),
                                               _R.reviewed_at.is_not(None))
                for row in self.connection.execute(
                    select(*REQUEST_COLUMNS).where(of_kind(Kind.BREAKGLASS), reviewed,
                                                   _R.created_at >= since, _R.created_at < until))]
        return sorted(uses, key=lambda request: request.created_at)
