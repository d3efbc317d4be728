"""What happened in a window of time (access.ports.Reports), for the daily digest: a few GROUP BY
queries, run once a day, so they may scan."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from access.ports import Activity
from access.requests import Kind, State
from storage.models import CertificateRecord, RequestRecord
from storage.requests import REQUEST_COLUMNS, from_row, of_kind

_C = CertificateRecord.__table__.c
_R = RequestRecord.__table__.c
_DIRECT = "(signed directly)"


class SqlReports:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _counts(self, statement) -> dict[str, int]:
        return {target or _DIRECT: count for target, count in self.connection.execute(statement)}

    def activity(self, since: datetime, until: datetime) -> Activity:
        issued = (select(_R.target, func.count())
                  .select_from(CertificateRecord.__table__.join(
                      RequestRecord.__table__, _R.id == _C.request_id))
                  .where(_C.issued_at >= since, _C.issued_at < until,
                         _R.kind == Kind.REQUEST.value)
                  .group_by(_R.target))
        revoked = (select(_R.target, func.count())
                   .select_from(CertificateRecord.__table__.outerjoin(
                       RequestRecord.__table__, _R.id == _C.request_id))
                   .where(_C.revoked_at >= since, _C.revoked_at < until).group_by(_R.target))

        def decided(state: State):
            return (select(_R.target, func.count())
                    .where(_R.state == state.value, _R.decided_at >= since, _R.decided_at < until)
                    .group_by(_R.target))

        uses = (select(*REQUEST_COLUMNS).where(of_kind(Kind.BREAKGLASS), _R.created_at >= since,
                                        _R.created_at < until).order_by(_R.created_at))
        return Activity(issued=self._counts(issued), denied=self._counts(decided(State.DENIED)),
                        expired=self._counts(decided(State.EXPIRED)),
                        revoked=self._counts(revoked),
                        breakglass=[from_row(row) for row in self.connection.execute(uses)])
