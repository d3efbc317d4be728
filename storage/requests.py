"""Repository for requests and votes. State moves only by compare-and-set on (state, version)."""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy import Text, and_, bindparam, func, literal, or_, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlmodel import Session

from access.requests import Kind, Request, State, Vote
from storage.db import unique
from storage.direct import Transaction
from storage.models import ApprovalRecord, RequestRecord
from storage.types import UInt64, UTCDateTime


def _literally(column, value: State | Kind):
    """`column = '<value>'` with the value written into the SQL, not bound. A partial index
    (storage.models.LIVE_REQUEST_INDEXES) serves a query only when the planner can see that the
    query's WHERE implies the index's; PostgreSQL's generic plan for a prepared statement
    (psycopg prepares a query from its sixth run on) cannot see a bound value."""
    return column == literal(value.value, literal_execute=True)


def in_state(state: State):
    return _literally(RequestRecord.state, state)


def to_domain(record: RequestRecord, votes: Iterable[ApprovalRecord]) -> Request:
    return Request(
        id=record.id, kind=Kind(record.kind), requester=record.requester, target=record.target,
        duration=timedelta(seconds=record.duration_seconds), reason=record.reason,
        key_fingerprint=record.key_fingerprint, state=State(record.state),
        created_at=record.created_at, expires_at=record.expires_at,
        votes=tuple(Vote(approver=v.approver, approve=v.approve, at=v.at)
                    for v in sorted(votes, key=lambda v: (v.at, v.id or 0))),
        version=record.version)


def insert(*, session: Session, request: Request, public_key: str,
           channel: str | None = None) -> RequestRecord:
    record = RequestRecord(
        id=request.id, kind=request.kind.value, requester=request.requester, target=request.target,
        duration_seconds=int(request.duration.total_seconds()), reason=request.reason,
        key_fingerprint=request.key_fingerprint, public_key=public_key, state=request.state.value,
        version=request.version, created_at=request.created_at, expires_at=request.expires_at,
        channel=channel)
    session.add(record)
    session.flush()
    return record


def get(*, session: Session, request_id: str, for_update: bool = False) -> RequestRecord | None:
    return session.get(RequestRecord, request_id, populate_existing=True,
                       with_for_update=for_update or None)


def load(*, session: Session, request_id: str,
         for_update: bool = False) -> tuple[RequestRecord, Request] | None:
    """The request and its votes. for_update locks the row (PostgreSQL) until the transaction
    ends, so concurrent voters queue instead of racing; SQLite's write lock already does that."""
    record = get(session=session, request_id=request_id, for_update=for_update)
    if record is None:
        return None
    votes = session.scalars(select(ApprovalRecord).where(ApprovalRecord.request_id == request_id))
    return record, to_domain(record, votes)


def add_vote(*, session: Session, request_id: str, vote: Vote) -> None:
    """Raises Duplicate if this approver already voted (a concurrent double click)."""
    session.add(ApprovalRecord(request_id=request_id, approver=vote.approver, approve=vote.approve,
                               at=vote.at))
    with unique("vote"):
        session.flush()


def compare_and_set(*, session: Session, request_id: str, version: int, expect: State,
                    **values) -> bool:
    """Move the request only if nobody else moved it since we read it."""
    result = session.execute(
        update(RequestRecord)
        .where(RequestRecord.id == request_id, RequestRecord.version == version,
               RequestRecord.state == expect.value)
        .values(version=RequestRecord.version + 1, **values))
    return result.rowcount == 1


_REQUESTS = RequestRecord.__table__
_APPROVALS = ApprovalRecord.__table__


class _VotesJson(ColumnElement):
    """The votes on the `requests` row a statement works on, as JSON text
    `[[id, approver, approve, at], ...]`: a subquery, so that the claim's RETURNING brings them
    along instead of a SELECT of their own."""

    type = Text()
    inherit_cache = True


@compiles(_VotesJson, "sqlite")
def _votes_json_sqlite(element, compiler, **kw) -> str:
    return ("(SELECT json_group_array(json_array(a.id, a.approver, a.approve, a.at)) "
            "FROM approvals AS a WHERE a.request_id = requests.id)")


@compiles(_VotesJson, "postgresql")
def _votes_json_postgresql(element, compiler, **kw) -> str:
    return ("(SELECT coalesce(json_agg(json_build_array(a.id, a.approver, a.approve, a.at)), "
            "'[]')::text FROM approvals AS a WHERE a.request_id = requests.id)")


_StoredVote = namedtuple("_StoredVote", "id approver approve at")


def _votes_from_json(text: str) -> list[_StoredVote]:
    """What _VotesJson gives, as rows for to_domain. Times come as SQLite's stored text (UTC,
    no offset) or PostgreSQL's ISO 8601 with an offset."""
    votes = []
    for vote_id, approver, approve, at in json.loads(text):
        moment = datetime.fromisoformat(at)
        moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None \
            else moment.astimezone(timezone.utc)
        votes.append(_StoredVote(vote_id, approver, bool(approve), moment))
    return votes


# The issuing path runs these for every certificate: built once, run on a Core connection.
_CLAIM_ISSUE = (
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("request_id"),
           _REQUESTS.c.state == State.APPROVED.value,
           or_(_REQUESTS.c.issue_claimed_at.is_(None),
               _REQUESTS.c.issue_claimed_at < bindparam("lapsed", type_=UTCDateTime())))
    .values(issue_serial=bindparam("serial", type_=UInt64()),
            issue_claimed_at=bindparam("now", type_=UTCDateTime()),
            issue_attempts=_REQUESTS.c.issue_attempts + 1)
    # What to_domain and the certificate need, not the bookkeeping columns.
    .returning(*(_REQUESTS.c[name] for name in (
        "id", "kind", "requester", "target", "duration_seconds", "reason", "key_fingerprint",
        "public_key", "state", "created_at", "expires_at", "version")),
        _VotesJson().label("votes")))
_MARK_ISSUED = (
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("request_id"), _REQUESTS.c.state == State.APPROVED.value,
           _REQUESTS.c.issue_serial == bindparam("serial", type_=UInt64()))
    .values(state=State.ISSUED.value, issued_at=bindparam("now", type_=UTCDateTime()),
            issue_error=None, version=_REQUESTS.c.version + 1))


def claim_issue(*, session: Session | Transaction, request_id: str, serial: int, now: datetime,
                lease: timedelta) -> tuple[Request, str] | None:
    """Reserve `serial` for issuing an approved request; another claim wins only after `lease`.
    Returns the request and the public key to certify, or None when it is not approved or
    someone else holds the claim."""
    row = session.execute(_CLAIM_ISSUE, {"request_id": request_id, "lapsed": now - lease,
                                         "serial": serial, "now": now}).first()
    if row is None:
        return None
    return to_domain(row, _votes_from_json(row.votes)), row.public_key


def release_issue(*, session: Session | Transaction, request_id: str, serial: int, error: str) -> None:
    session.execute(
        update(_REQUESTS)
        .where(_REQUESTS.c.id == request_id, _REQUESTS.c.issue_serial == serial)
        .values(issue_claimed_at=None, issue_error=error[:1000]))


def mark_issued(*, session: Session | Transaction, request_id: str, serial: int,
                now: datetime) -> bool:
    """Only the holder of the claim on `serial` moves the request to issued."""
    result = session.execute(_MARK_ISSUED, {"request_id": request_id, "serial": serial, "now": now})
    return result.rowcount == 1


def pending_count(*, session: Session, requester: str, target: str) -> int:
    return session.scalar(select(func.count()).select_from(RequestRecord).where(
        RequestRecord.requester == requester, RequestRecord.target == target,
        in_state(State.PENDING))) or 0


def past_ttl(*, session: Session, now: datetime, limit: int = 500) -> list[RequestRecord]:
    """Pending requests past their TTL, oldest first (ix_requests_pending_expires_at)."""
    return list(session.scalars(
        select(RequestRecord)
        .where(in_state(State.PENDING), RequestRecord.expires_at <= now)
        .order_by(RequestRecord.expires_at).limit(limit)))


def expire_pending(*, session: Session, now: datetime, limit: int = 500) -> list[RequestRecord]:
    """Pending requests past their TTL, moved to expired."""
    due = past_ttl(session=session, now=now, limit=limit)
    moved = []
    for record in due:
        if compare_and_set(session=session, request_id=record.id, version=record.version,
                           expect=State.PENDING, state=State.EXPIRED.value, decided_at=now):
            moved.append(record)
    return moved


def approved_unissued(*, session: Session, now: datetime, lease: timedelta) -> list[str]:
    """Approved requests to issue again: the last attempt failed (and released its claim), its
    claim lapsed, or nobody tried within `lease` of the approval. A fresh approval belongs to
    the worker that approved it, which issues it next; a sweep taking it first would leave that
    worker (a break-glass user waiting for the answer) with nothing."""
    lapsed = now - lease
    unclaimed = RequestRecord.issue_claimed_at.is_(None)
    return list(session.scalars(
        select(RequestRecord.id).where(
            in_state(State.APPROVED),
            or_(RequestRecord.issue_claimed_at < lapsed,
                and_(unclaimed, RequestRecord.issue_attempts > 0),
                and_(unclaimed, func.coalesce(RequestRecord.decided_at,
                                              RequestRecord.created_at) < lapsed)))))


def set_message(*, session: Session, request_id: str, channel: str, ts: str) -> None:
    session.execute(update(RequestRecord).where(RequestRecord.id == request_id)
                    .values(channel=channel, message_ts=ts))


def mark_reviewed(*, session: Session, request_id: str, by: str, now: datetime) -> bool:
    result = session.execute(
        update(RequestRecord)
        .where(RequestRecord.id == request_id, RequestRecord.kind == Kind.BREAKGLASS.value,
               RequestRecord.reviewed_at.is_(None))
        .values(reviewed_at=now, reviewed_by=by))
    return result.rowcount == 1


def _postable(now: datetime, lease: timedelta):
    return (RequestRecord.message_ts.is_(None),
            or_(RequestRecord.post_claimed_at.is_(None), RequestRecord.post_claimed_at < now - lease))


def unposted(*, session: Session, now: datetime, lease: timedelta) -> list[tuple[str, str]]:
    """Pending requests nobody has posted or is posting (a claim older than `lease` lapsed)."""
    rows = session.execute(
        select(RequestRecord.id, RequestRecord.channel).where(
            in_state(State.PENDING), RequestRecord.kind == Kind.REQUEST.value,
            RequestRecord.channel.is_not(None), *_postable(now, lease))
        .order_by(RequestRecord.created_at))
    return [(request_id, channel) for request_id, channel in rows]


def claim_post(*, session: Session, request_id: str, now: datetime, lease: timedelta) -> bool:
    """Only one worker (thread or replica) posts a request's message."""
    result = session.execute(update(RequestRecord)
                             .where(RequestRecord.id == request_id, *_postable(now, lease))
                             .values(post_claimed_at=now))
    return result.rowcount == 1


def release_post(*, session: Session, request_id: str) -> None:
    session.execute(update(RequestRecord)
                    .where(RequestRecord.id == request_id, RequestRecord.message_ts.is_(None))
                    .values(post_claimed_at=None))


def pending_of(*, session: Session, requester: str) -> list[RequestRecord]:
    return list(session.scalars(
        select(RequestRecord).where(RequestRecord.requester == requester,
                                    in_state(State.PENDING))
        .order_by(RequestRecord.created_at)))


def escalate_unreviewed(*, session: Session, before: datetime, now: datetime) -> list[RequestRecord]:
    """Break-glass uses created before `before`, unreviewed and not yet escalated: mark them."""
    due = list(session.scalars(
        select(RequestRecord).where(_literally(RequestRecord.kind, Kind.BREAKGLASS),
                                    RequestRecord.reviewed_at.is_(None),
                                    RequestRecord.review_escalated_at.is_(None),
                                    RequestRecord.created_at <= before)))
    moved = []
    for record in due:
        result = session.execute(
            update(RequestRecord)
            .where(RequestRecord.id == record.id, RequestRecord.review_escalated_at.is_(None))
            .values(review_escalated_at=now))
        if result.rowcount == 1:
            moved.append(record)
    return moved
