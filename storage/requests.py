"""Requests and their votes (access.ports.Requests). State moves only by compare-and-set on
(state, version).

The statements are built once, with bound parameters: building one costs SQLAlchemy more than
running it, and every request runs a dozen of them (bench/README.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, literal, or_, select, update
from sqlalchemy.engine import Connection

from access.requests import Kind, Request, State, Vote
from access.template import Template
from storage.db import unique
from storage.models import ApprovalRecord, RequestRecord
from storage.types import UInt64, UTCDateTime

_REQUESTS = RequestRecord.__table__
_APPROVALS = ApprovalRecord.__table__
_R = _REQUESTS.c
# Every column but the claim bookkeeping, which the domain does not see.
_COLUMNS = [_R[name] for name in (
    "id", "kind", "requester", "target", "duration_seconds", "reason", "key_fingerprint",
    "public_key", "state", "version", "created_at", "expires_at", "decided_at", "issue_error",
    "issue_attempts", "reviewed_by", "reviewed_at", "review_note", "review_escalated_at",
    "template", "cancelled_by", "extends", "key_proven")]


def _literally(column, value: State | Kind):
    """`column = '<value>'` with the value written into the SQL, not bound. A partial index
    (storage.models.LIVE_REQUEST_INDEXES) serves a query only when the planner can see that the
    query's WHERE implies the index's; PostgreSQL's generic plan for a prepared statement
    (psycopg prepares a query from its sixth run on) cannot see a bound value."""
    return column == literal(value.value, literal_execute=True)


def in_state(state: State):
    return _literally(_R.state, state)


def of_kind(kind: Kind):
    return _literally(_R.kind, kind)


def _time(name: str):
    return bindparam(name, type_=UTCDateTime())


_INSERT = _REQUESTS.insert()
_GET = select(*_COLUMNS).where(_R.id == bindparam("id"))
_GET_LOCKED = _GET.with_for_update()
_VOTES = (select(_APPROVALS.c.approver, _APPROVALS.c.approve, _APPROVALS.c.at,
                 _APPROVALS.c.comment)
          .where(_APPROVALS.c.request_id == bindparam("id"))
          .order_by(_APPROVALS.c.at, _APPROVALS.c.id))
_VOTES_OF = (select(_APPROVALS.c.request_id, _APPROVALS.c.approver, _APPROVALS.c.approve,
                    _APPROVALS.c.at, _APPROVALS.c.comment)
             .where(_APPROVALS.c.request_id.in_(bindparam("ids", expanding=True)))
             .order_by(_APPROVALS.c.at, _APPROVALS.c.id))
_ADD_VOTE = _APPROVALS.insert()
# (An UPDATE's parameters may not be named like the table's columns.)
_MOVE = (update(_REQUESTS)
         .where(_R.id == bindparam("rid"), _R.version == bindparam("seen_version"),
                _R.state == bindparam("expect"))
         .values(state=bindparam("new_state"), decided_at=_time("decided"),
                 expires_at=_time("expires"), issue_error=bindparam("error"),
                 cancelled_by=bindparam("canceller"), version=_R.version + 1))
_PENDING_COUNT = (select(func.count()).select_from(_REQUESTS)
                  .where(_R.requester == bindparam("requester"), _R.target == bindparam("target"),
                         in_state(State.PENDING)))
_PENDING_OF = (select(*_COLUMNS).where(_R.requester == bindparam("requester"),
                                       in_state(State.PENDING)).order_by(_R.created_at))
# ix_requests_approved: approved requests are few (see _UNISSUED_PAST_TTL)
_APPROVED_OF = (select(*_COLUMNS).where(_R.requester == bindparam("requester"),
                                        in_state(State.APPROVED)).order_by(_R.created_at))
_PENDING = (select(*_COLUMNS).where(in_state(State.PENDING), _R.expires_at > _time("now"))
            .order_by(_R.expires_at).limit(bindparam("limit")))
# Admins' App Home only: no index of its own (break-glass uses are few and this is rare).
_UNREVIEWED_ALL = (select(*_COLUMNS).where(_literally(_R.kind, Kind.BREAKGLASS),
                                           _R.reviewed_at.is_(None))
                   .order_by(_R.created_at).limit(bindparam("limit")))
_PAST_TTL = (select(*_COLUMNS).where(in_state(State.PENDING), _R.expires_at <= _time("now"))
             .order_by(_R.expires_at).limit(bindparam("limit")))
_NOT_CLAIMED = or_(_R.issue_claimed_at.is_(None), _R.issue_claimed_at < _time("lapsed"))
# ix_requests_approved: approved requests are few (issued within a second, unless the signer fails)
_UNISSUED_PAST_TTL = (select(*_COLUMNS)
                      .where(in_state(State.APPROVED), _R.expires_at <= _time("now"), _NOT_CLAIMED)
                      .order_by(_R.expires_at).limit(bindparam("limit")))
_CLAIM = (update(_REQUESTS)
          .where(_R.id == bindparam("rid"), _R.state == State.APPROVED.value,
                 _R.issue_attempts < bindparam("max_attempts"), _NOT_CLAIMED)
          .values(issue_serial=bindparam("serial", type_=UInt64()), issue_claimed_at=_time("now"),
                  issue_attempts=_R.issue_attempts + 1)
          .returning(*_COLUMNS))
_RELEASE = (update(_REQUESTS)
            .where(_R.id == bindparam("rid"), _R.issue_serial == bindparam("serial", type_=UInt64()))
            .values(issue_claimed_at=None, issue_error=bindparam("error"),
                    issue_retry_at=_time("retry_at")))
_MARK_ISSUED = (update(_REQUESTS)
                .where(_R.id == bindparam("rid"), _R.state == State.APPROVED.value,
                       _R.issue_serial == bindparam("serial", type_=UInt64()))
                .values(state=State.ISSUED.value, issued_at=_time("now"), issue_error=None,
                        version=_R.version + 1))
# A fresh approval belongs to the worker that approved it, which issues it next; a sweep taking
# it first would leave that worker (a break-glass user waiting) with nothing.
_ISSUABLE = select(_R.id).where(
    in_state(State.APPROVED), _R.issue_attempts < bindparam("max_attempts"),
    or_(_R.issue_claimed_at < _time("lapsed"),
        and_(_R.issue_claimed_at.is_(None), _R.issue_attempts > 0,
             _R.issue_retry_at <= _time("now")),
        and_(_R.issue_claimed_at.is_(None), _R.issue_attempts == 0,
             func.coalesce(_R.decided_at, _R.created_at) < _time("lapsed"))))
_MARK_REVIEWED = (update(_REQUESTS)
                  .where(_R.id == bindparam("rid"), _R.kind == Kind.BREAKGLASS.value,
                         _R.reviewed_at.is_(None))
                  .values(reviewed_at=_time("now"), reviewed_by=bindparam("by"),
                          review_note=bindparam("note")))
# ix_requests_breakglass_unreviewed. Due: never escalated and created before `before`, or last
# escalated before it; the UPDATE's compare-and-set on the last escalation lets one replica win.
_UNREVIEWED = select(*_COLUMNS).where(
    _literally(_R.kind, Kind.BREAKGLASS), _R.reviewed_at.is_(None), _R.created_at <= _time("before"),
    or_(_R.review_escalated_at.is_(None), _R.review_escalated_at <= _time("before")))
_ESCALATE = (update(_REQUESTS)
             .where(_R.id == bindparam("rid"), _R.reviewed_at.is_(None),
                    _R.review_escalated_at.is_not_distinct_from(_time("seen")))
             .values(review_escalated_at=_time("now")))
_UNESCALATE = (update(_REQUESTS)
               .where(_R.id == bindparam("rid"), _R.review_escalated_at == _time("now"))
               .values(review_escalated_at=_time("back")))


def _request(row, votes=()) -> Request:
    return Request(
        id=row.id, kind=Kind(row.kind), requester=row.requester, target=row.target,
        duration=timedelta(seconds=row.duration_seconds), reason=row.reason,
        key_fingerprint=row.key_fingerprint, public_key=row.public_key, state=State(row.state),
        created_at=row.created_at, expires_at=row.expires_at, votes=tuple(votes),
        version=row.version, decided_at=row.decided_at, issue_error=row.issue_error,
        issue_attempts=row.issue_attempts, reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at, review_note=row.review_note,
        escalated_at=row.review_escalated_at,
        template=Template.from_json(row.template) if row.template else None,
        cancelled_by=row.cancelled_by, extends=row.extends, key_proven=row.key_proven)


def _vote(row) -> Vote:
    return Vote(approver=row.approver, approve=row.approve, at=row.at, comment=row.comment)


class SqlRequests:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _run(self, statement, **params):
        return self.connection.execute(statement, params)

    def add(self, request: Request) -> None:
        self._run(_INSERT, id=request.id, kind=request.kind.value, requester=request.requester,
                  target=request.target, duration_seconds=int(request.duration.total_seconds()),
                  reason=request.reason, key_fingerprint=request.key_fingerprint,
                  public_key=request.public_key, state=request.state.value,
                  version=request.version, created_at=request.created_at,
                  expires_at=request.expires_at, decided_at=request.decided_at, issue_attempts=0,
                  template=request.template.to_json() if request.template else None,
                  extends=request.extends, key_proven=request.key_proven)

    def get(self, request_id: str, *, lock: bool = False) -> Request | None:
        # lock: the row stays locked (PostgreSQL) until the transaction ends, so concurrent
        # voters queue instead of racing; SQLite's write lock already does that.
        row = self._run(_GET_LOCKED if lock else _GET, id=request_id).first()
        return None if row is None else _request(row, self._votes(request_id))

    def _votes(self, request_id: str) -> list[Vote]:
        return [_vote(r) for r in self._run(_VOTES, id=request_id)]

    def _with_votes(self, rows) -> list[Request]:
        """Requests with their votes, read in one statement for all (not one per request)."""
        rows = list(rows)
        votes: dict[str, list[Vote]] = {row.id: [] for row in rows}
        if rows:
            for r in self._run(_VOTES_OF, ids=list(votes)):
                votes[r.request_id].append(_vote(r))
        return [_request(row, votes[row.id]) for row in rows]

    def move(self, before: Request, after: Request) -> bool:
        return self._run(_MOVE, rid=before.id, seen_version=before.version,
                         expect=before.state.value, new_state=after.state.value,
                         decided=after.decided_at, expires=after.expires_at,
                         error=after.issue_error, canceller=after.cancelled_by).rowcount == 1

    def add_vote(self, request_id: str, vote: Vote) -> None:
        with unique("vote"):
            self._run(_ADD_VOTE, request_id=request_id, approver=vote.approver,
                      approve=vote.approve, at=vote.at, comment=vote.comment)

    def pending_count(self, requester: str, target: str) -> int:
        return self._run(_PENDING_COUNT, requester=requester, target=target).scalar() or 0

    def pending_of(self, requester: str) -> list[Request]:
        return [_request(row) for row in self._run(_PENDING_OF, requester=requester)]

    def open_of(self, requester: str) -> list[Request]:
        return self.pending_of(requester) + [
            _request(row) for row in self._run(_APPROVED_OF, requester=requester)]

    def pending(self, now: datetime, limit: int) -> list[Request]:
        # ix_requests_pending_expires_at
        return self._with_votes(self._run(_PENDING, now=now, limit=limit))

    def unreviewed_breakglass(self, limit: int) -> list[Request]:
        return [_request(row) for row in self._run(_UNREVIEWED_ALL, limit=limit)]

    def past_ttl(self, now: datetime, limit: int, *, lease: timedelta) -> list[Request]:
        # ix_requests_pending_expires_at, then ix_requests_approved
        pending = [_request(row) for row in self._run(_PAST_TTL, now=now, limit=limit)]
        return pending + self._with_votes(
            self._run(_UNISSUED_PAST_TTL, now=now, lapsed=now - lease, limit=limit))

    def claim_issue(self, request_id: str, *, serial: int, now: datetime, lease: timedelta,
                    max_attempts: int) -> Request | None:
        row = self._run(_CLAIM, rid=request_id, lapsed=now - lease, serial=serial, now=now,
                        max_attempts=max_attempts).first()
        return None if row is None else _request(row, self._votes(request_id))

    def release_issue(self, request_id: str, *, serial: int, error: str,
                      retry_at: datetime) -> None:
        self._run(_RELEASE, rid=request_id, serial=serial, error=error[:1000], retry_at=retry_at)

    def mark_issued(self, request_id: str, *, serial: int, now: datetime) -> bool:
        return self._run(_MARK_ISSUED, rid=request_id, serial=serial, now=now).rowcount == 1

    def issuable(self, now: datetime, lease: timedelta, max_attempts: int) -> list[str]:
        return list(self._run(_ISSUABLE, lapsed=now - lease, now=now,
                              max_attempts=max_attempts).scalars())

    def mark_reviewed(self, request_id: str, *, by: str, now: datetime, note: str | None) -> bool:
        return self._run(_MARK_REVIEWED, rid=request_id, by=by, now=now, note=note).rowcount == 1

    def escalate_unreviewed(self, *, due_before: datetime, now: datetime) -> list[Request]:
        due = list(self._run(_UNREVIEWED, before=due_before))
        return [_request(row) for row in due if self._run(
            _ESCALATE, rid=row.id, seen=row.review_escalated_at, now=now).rowcount == 1]

    def unescalate(self, request: Request, *, escalated_at: datetime) -> bool:
        return self._run(_UNESCALATE, rid=request.id, now=escalated_at,
                         back=request.escalated_at).rowcount == 1


# For storage.reports, which reads requests in its own queries.
REQUEST_COLUMNS = _COLUMNS
from_row = _request
