"""Story sessions, idempotency records and choice leases, and where they are kept.

DynamoDB item model (table keys: `session_id` S, `timestamp` N; GSI `UserStoryIndex` on
`user_id` + `timestamp`; TTL attribute `expires_at`):

- header, `timestamp = 0`: `item_type = "session"`, `beat_count` (the version every
  write is conditioned on), `genre`, `premise`, `max_beats`, `created_at` (epoch ms);
  while a choice is being generated, its lease: `pending_choice`, `pending_token`,
  `pending_until` (epoch ms).
- beat `i`, `timestamp = created_at + i`: `item_type = "beat"`, `beat`, `text`,
  `choices`, `ending`, `from_choice` (the choice on beat `i - 1` that led here, absent
  on the opening beat), `created_at`, `provider`, `model`. Only the opening beat carries
  `user_id` (the reader, their token's `sub`), so `UserStoryIndex` lists each session
  once, by start time; it also carries what the listing shows: `genre`, `premise` and
  `status` (`active`, set to `completed` by the write of the ending).
- idempotency record of a keyed start, `session_id = "idem#" + sha256(reader + "\\0" +
  key)`, `timestamp = 0`: `item_type = "idempotency"`, `session` (the id of the session
  it starts, random like every session id), `fingerprint` (of the body), `state`
  (`in_progress`, then `done`), `until` (epoch ms: the in-progress lease).

Every item of a session carries the same `expires_at` (start + SESSION_TTL_DAYS), so a
session expires as a whole; reads treat an expired item as gone because DynamoDB
deletes expired items lazily. Session ids are UUIDs, which keeps them apart from the
idempotency records, the router's circuit-breaker items (`circuit#<provider>`) and the
reader budget's counters (`budget#...`, `budget.py`).

Every write that decides between concurrent requests is one conditional write:
- a keyed start claims its record with a PutItem, unless a live one exists (done, or
  in progress within its lease); the session is then created with one transaction
  (header and opening beat only if absent, the record set to `done` only if it is
  still this claim), and a failed generation deletes the claim (only if still its own);
- a choice takes the lease on the header with an UpdateItem, unless the header's
  `beat_count` changed or another lease is live; the beat is appended with one
  transaction (`beat_count` unchanged and the lease still its own, the beat's key
  free) that also drops the lease, and a failed generation drops the lease (only if
  still its own).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef, TransactWriteItemTypeDef

SESSION_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)

HEADER_TIMESTAMP = 0
USER_STORY_INDEX = "UserStoryIndex"
IDEMPOTENCY_PREFIX = "idem#"

Status = Literal["active", "completed"]


def is_session_id(value: str) -> bool:
    """Whether `value` is a session id: a UUID in its canonical lower-case form."""
    return _SESSION_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Beat:
    """One beat of a story: text and the reader's options (none on an ending)."""

    index: int
    text: str
    choices: tuple[str, ...]
    ending: bool
    from_choice: int | None
    created_at_ms: int
    provider: str
    model: str


@dataclass(frozen=True)
class Session:
    """A story session with its beats in order; the last beat is the current one.

    `user_id` is the reader who started it (their token's `sub`), the only one who
    may read or continue it.
    """

    session_id: str
    user_id: str
    genre: str
    premise: str | None
    max_beats: int
    created_at_ms: int
    expires_at: int
    beats: tuple[Beat, ...]

    @property
    def status(self) -> Status:
        """`completed` once the last beat is an ending."""
        return "completed" if self.beats[-1].ending else "active"

    @property
    def current(self) -> Beat:
        """The last beat, the one the reader chooses on."""
        return self.beats[-1]

    def chosen(self, index: int) -> int | None:
        """The choice the reader made on beat `index`, if any."""
        if index + 1 < len(self.beats):
            return self.beats[index + 1].from_choice
        return None

    def with_beat(self, beat: Beat) -> Session:
        """This session with `beat` appended."""
        return replace(self, beats=(*self.beats, beat))


@dataclass(frozen=True)
class IdempotencyRecord:
    """What a reader's Idempotency-Key started: a session, by a request with `fingerprint`.

    `state` is `in_progress` while the opening beat is being generated, until
    `until_ms` at most (the lease); `done` once the session is stored.
    """

    key_id: str
    session_id: str
    fingerprint: str
    state: Literal["in_progress", "done"]
    until_ms: int
    expires_at: int

    def live(self, now_ms: int) -> bool:
        """Whether the record still decides the key's requests (else a new claim may replace it)."""
        if self.expires_at * 1000 <= now_ms:
            return False
        return self.state == "done" or self.until_ms > now_ms


@dataclass(frozen=True)
class PendingChoice:
    """A lease on a session's current beat: `choice` is being generated until `until_ms`.

    `token` identifies the request holding it: only that request may append the
    beat or drop the lease.
    """

    choice: int
    token: str
    until_ms: int


@dataclass(frozen=True)
class StoryKey:
    """A story's place in a reader's listing: start time, then id (newest first)."""

    timestamp: int
    session_id: str


@dataclass(frozen=True)
class StorySummary:
    """One entry of a reader's listing."""

    session_id: str
    genre: str
    premise: str | None
    status: Status
    created_at_ms: int
    expires_at: int

    @property
    def key(self) -> StoryKey:
        """Where a page that ends with this story resumes."""
        return StoryKey(self.created_at_ms, self.session_id)


@dataclass(frozen=True)
class StoryPage:
    """A page of a listing, and where the next one starts (None: this is the last)."""

    stories: tuple[StorySummary, ...]
    next: StoryKey | None


class SessionExists(Exception):  # noqa: N818 (a state, not an error of the caller)
    """A session with this id already exists."""


class StaleSession(Exception):  # noqa: N818 (a state, not an error of the caller)
    """The session changed since it was read (another beat was written), or is gone,
    or the caller's lease on it is no longer its own."""


class ClaimLost(Exception):  # noqa: N818 (a state, not an error of the caller)
    """The idempotency record is no longer the caller's claim (its lease ran out and
    another request replaced it)."""


class ChoicePending(Exception):  # noqa: N818 (a state, not an error of the caller)
    """Another request holds the lease on the session's current beat."""

    def __init__(self, pending: PendingChoice) -> None:
        super().__init__(f"choice {pending.choice} is pending until {pending.until_ms}")
        self.pending = pending


class SessionStore(Protocol):
    """Where sessions live. Writes are conditional, so concurrent writers never overwrite."""

    def create(self, session: Session, claim: IdempotencyRecord | None = None) -> None:
        """Store a new session with its opening beat (and mark `claim` done, atomically).

        Raises `SessionExists` if the id is taken, `ClaimLost` if `claim` is no longer
        the record's in-progress claim; in both cases nothing is written.
        """
        ...

    def get(self, session_id: str) -> Session | None:
        """The session, or None when it does not exist or has expired."""
        ...

    def claim(self, record: IdempotencyRecord, now_ms: int) -> IdempotencyRecord | None:
        """Store the in-progress `record` unless a live one has its key.

        Returns None when `record` was stored, else the live record; raises
        `ClaimLost` when the record changed in between (the caller tries again).
        """
        ...

    def record(self, key_id: str) -> IdempotencyRecord | None:
        """The idempotency record of `key_id` (live or not), or None."""
        ...

    def release_claim(self, record: IdempotencyRecord) -> None:
        """Delete the in-progress `record` if it is still this claim."""
        ...

    def reserve(self, session: Session, pending: PendingChoice, now_ms: int) -> None:
        """Take the lease on `session.current` for `pending`.

        Raises `StaleSession` if a beat was added since `session` was read (or the
        session is gone), `ChoicePending` if another request's lease is live.
        """
        ...

    def release(self, session: Session, pending: PendingChoice) -> None:
        """Drop the lease `pending` if it is still the one on the session."""
        ...

    def append(self, session: Session, beat: Beat, pending: PendingChoice) -> None:
        """Add `beat` after `session.beats` and drop the lease `pending`.

        Raises `StaleSession` if another beat came first or the lease is not `pending`.
        """
        ...

    def stories(self, user_id: str, limit: int, after: StoryKey | None) -> StoryPage:
        """The reader's stories, newest first: `limit` at most, those after `after`."""
        ...


class MemorySessionStore:
    """`SessionStore` in memory, for local runs and tests, with the same conditional writes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._pending: dict[str, PendingChoice] = {}
        self._records: dict[str, IdempotencyRecord] = {}
        self._lock = threading.Lock()

    def create(self, session: Session, claim: IdempotencyRecord | None = None) -> None:
        """See `SessionStore.create`."""
        with self._lock:
            if session.session_id in self._sessions:
                raise SessionExists(session.session_id)
            if claim is not None:
                if self._records.get(claim.key_id) != claim:
                    raise ClaimLost(claim.key_id)
                self._records[claim.key_id] = replace(claim, state="done", until_ms=0)
            self._sessions[session.session_id] = session

    def get(self, session_id: str) -> Session | None:
        """See `SessionStore.get`."""
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or session.expires_at <= self._clock():
            return None
        return session

    def claim(self, record: IdempotencyRecord, now_ms: int) -> IdempotencyRecord | None:
        """See `SessionStore.claim`."""
        with self._lock:
            stored = self._records.get(record.key_id)
            if stored is not None and stored.live(now_ms):
                return stored
            self._records[record.key_id] = record
            return None

    def record(self, key_id: str) -> IdempotencyRecord | None:
        """See `SessionStore.record`."""
        with self._lock:
            return self._records.get(key_id)

    def release_claim(self, record: IdempotencyRecord) -> None:
        """See `SessionStore.release_claim`."""
        with self._lock:
            if self._records.get(record.key_id) == record:
                del self._records[record.key_id]

    def reserve(self, session: Session, pending: PendingChoice, now_ms: int) -> None:
        """See `SessionStore.reserve`."""
        with self._lock:
            stored = self._sessions.get(session.session_id)
            if stored is None or len(stored.beats) != len(session.beats):
                raise StaleSession(session.session_id)
            held = self._pending.get(session.session_id)
            if held is not None and held.until_ms > now_ms:
                raise ChoicePending(held)
            self._pending[session.session_id] = pending

    def release(self, session: Session, pending: PendingChoice) -> None:
        """See `SessionStore.release`."""
        with self._lock:
            if self._pending.get(session.session_id) == pending:
                del self._pending[session.session_id]

    def append(self, session: Session, beat: Beat, pending: PendingChoice) -> None:
        """See `SessionStore.append`."""
        with self._lock:
            stored = self._sessions.get(session.session_id)
            if (
                stored is None
                or len(stored.beats) != len(session.beats)
                or self._pending.get(session.session_id) != pending
            ):
                raise StaleSession(session.session_id)
            del self._pending[session.session_id]
            self._sessions[session.session_id] = stored.with_beat(beat)

    def stories(self, user_id: str, limit: int, after: StoryKey | None) -> StoryPage:
        """See `SessionStore.stories`."""
        now = self._clock()
        with self._lock:
            summaries = [
                _summary_of(session)
                for session in self._sessions.values()
                if session.user_id == user_id and session.expires_at > now
            ]
        summaries.sort(key=lambda summary: _order(summary.key), reverse=True)
        if after is not None:
            summaries = [summary for summary in summaries if _order(summary.key) < _order(after)]
        page = tuple(summaries[:limit])
        return StoryPage(page, page[-1].key if len(summaries) > limit else None)


def _order(key: StoryKey) -> tuple[int, str]:
    return key.timestamp, key.session_id


def _summary_of(session: Session) -> StorySummary:
    return StorySummary(
        session_id=session.session_id,
        genre=session.genre,
        premise=session.premise,
        status=session.status,
        created_at_ms=session.created_at_ms,
        expires_at=session.expires_at,
    )


_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_REMOVE_PENDING = "REMOVE pending_choice, pending_token, pending_until"


class DynamoDBSessionStore:
    """`SessionStore` on the story-session table (item model in the module docstring)."""

    def __init__(
        self, client: DynamoDBClient, table_name: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock

    def create(self, session: Session, claim: IdempotencyRecord | None = None) -> None:
        """See `SessionStore.create`."""
        header: dict[str, object] = {
            "session_id": session.session_id,
            "timestamp": HEADER_TIMESTAMP,
            "item_type": "session",
            "beat_count": len(session.beats),
            "genre": session.genre,
            "max_beats": session.max_beats,
            "created_at": session.created_at_ms,
            "expires_at": session.expires_at,
        }
        if session.premise is not None:
            header["premise"] = session.premise
        items: list[TransactWriteItemTypeDef] = [self._put_new(header)]
        items += [self._put_new(self._beat_item(session, beat)) for beat in session.beats]
        if claim is not None:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _key(claim.key_id),
                        "UpdateExpression": "SET #state = :done REMOVE #until",
                        # Each claim names a new random session id: its own claim.
                        "ConditionExpression": "#session = :session AND #state = :in_progress",
                        "ExpressionAttributeNames": {
                            "#state": "state",
                            "#until": "until",
                            "#session": "session",
                        },
                        "ExpressionAttributeValues": _to_item(
                            {
                                ":done": "done",
                                ":in_progress": "in_progress",
                                ":session": claim.session_id,
                            }
                        ),
                    }
                }
            )
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            reasons = _cancellation_reasons(error)
            if reasons is None:
                raise
            if claim is not None and reasons[-1] in _LOST:
                raise ClaimLost(claim.key_id) from error
            if any(reason in _LOST for reason in reasons):
                raise SessionExists(session.session_id) from error
            raise

    def get(self, session_id: str) -> Session | None:
        """See `SessionStore.get`."""
        if not is_session_id(session_id):
            return None
        request: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "session_id = :id",
            "ExpressionAttributeValues": {":id": {"S": session_id}},
            "ConsistentRead": True,
        }
        items: list[dict[str, Any]] = []
        while True:
            page = self._client.query(**request)
            items += [_from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return _session_from_items(items, now=self._clock())
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def claim(self, record: IdempotencyRecord, now_ms: int) -> IdempotencyRecord | None:
        """See `SessionStore.claim`."""
        item = {
            "session_id": record.key_id,
            "timestamp": HEADER_TIMESTAMP,
            "item_type": "idempotency",
            "session": record.session_id,
            "fingerprint": record.fingerprint,
            "state": record.state,
            "until": record.until_ms,
            "expires_at": record.expires_at,
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=_to_item(item),
                # Absent, expired (DynamoDB deletes lazily), or an in-progress claim
                # whose lease ran out (its request died): the key is free.
                ConditionExpression=(
                    "attribute_not_exists(session_id) OR expires_at <= :now_s "
                    "OR (#state = :in_progress AND #until <= :now_ms)"
                ),
                ExpressionAttributeNames={"#state": "state", "#until": "until"},
                ExpressionAttributeValues=_to_item(
                    {":now_s": now_ms // 1000, ":now_ms": now_ms, ":in_progress": "in_progress"}
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise
            stored = _record_from_item(record.key_id, _failed_item(error))
            stored = stored or self.record(record.key_id)
            if stored is None:  # released between the write and the read: try again
                raise ClaimLost(record.key_id) from error
            return stored
        return None

    def record(self, key_id: str) -> IdempotencyRecord | None:
        """See `SessionStore.record`."""
        item = self._client.get_item(TableName=self._table, Key=_key(key_id), ConsistentRead=True)
        return _record_from_item(key_id, item.get("Item", {}))

    def release_claim(self, record: IdempotencyRecord) -> None:
        """See `SessionStore.release_claim`."""
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_key(record.key_id),
                ConditionExpression="#session = :session AND #state = :in_progress",
                ExpressionAttributeNames={"#session": "session", "#state": "state"},
                ExpressionAttributeValues=_to_item(
                    {":session": record.session_id, ":in_progress": "in_progress"}
                ),
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise

    def reserve(self, session: Session, pending: PendingChoice, now_ms: int) -> None:
        """See `SessionStore.reserve`."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(session.session_id),
                UpdateExpression=(
                    "SET pending_choice = :choice, pending_token = :token, pending_until = :until"
                ),
                ConditionExpression=(
                    "beat_count = :count AND "
                    "(attribute_not_exists(pending_until) OR pending_until <= :now)"
                ),
                ExpressionAttributeValues=_to_item(
                    {
                        ":choice": pending.choice,
                        ":token": pending.token,
                        ":until": pending.until_ms,
                        ":count": len(session.beats),
                        ":now": now_ms,
                    }
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise
            header = _from_item(_failed_item(error))
            if header.get("beat_count") != len(session.beats):
                raise StaleSession(session.session_id) from error
            raise ChoicePending(
                PendingChoice(
                    choice=header["pending_choice"],
                    token=header["pending_token"],
                    until_ms=header["pending_until"],
                )
            ) from error

    def release(self, session: Session, pending: PendingChoice) -> None:
        """See `SessionStore.release`."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(session.session_id),
                UpdateExpression=_REMOVE_PENDING,
                ConditionExpression="pending_token = :token",
                ExpressionAttributeValues=_to_item({":token": pending.token}),
            )
        except ClientError as error:
            if not _condition_failed(error):
                raise

    def append(self, session: Session, beat: Beat, pending: PendingChoice) -> None:
        """See `SessionStore.append`."""
        items: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _key(session.session_id),
                    "UpdateExpression": f"SET beat_count = :next {_REMOVE_PENDING}",
                    "ConditionExpression": "beat_count = :read AND pending_token = :token",
                    "ExpressionAttributeValues": _to_item(
                        {
                            ":read": len(session.beats),
                            ":next": len(session.beats) + 1,
                            ":token": pending.token,
                        }
                    ),
                }
            },
            self._put_new(self._beat_item(session, beat)),
        ]
        if beat.ending:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _key(session.session_id, session.created_at_ms),
                        "UpdateExpression": "SET #status = :completed",
                        "ConditionExpression": "attribute_exists(session_id)",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": _to_item({":completed": "completed"}),
                    }
                }
            )
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            reasons = _cancellation_reasons(error)
            if reasons is not None and any(reason in _LOST for reason in reasons):
                raise StaleSession(session.session_id) from error
            raise

    def stories(self, user_id: str, limit: int, after: StoryKey | None) -> StoryPage:
        """See `SessionStore.stories`.

        The index is read newest first, `limit + 1` stories at a time, to know whether
        another page follows; expired stories the TTL has not deleted yet are skipped.
        """
        now = self._clock()
        request: QueryInputTypeDef = {
            "TableName": self._table,
            "IndexName": USER_STORY_INDEX,
            "KeyConditionExpression": "user_id = :user",
            "ExpressionAttributeValues": {":user": {"S": user_id}},
            "ScanIndexForward": False,
        }
        if after is not None:
            request["ExclusiveStartKey"] = _to_item(
                {
                    "user_id": user_id,
                    "timestamp": after.timestamp,
                    "session_id": after.session_id,
                }
            )
        found: list[StorySummary] = []
        while len(found) <= limit:
            request["Limit"] = limit + 1 - len(found)
            page = self._client.query(**request)
            for item in page.get("Items", []):
                summary = _summary_from_item(_from_item(item), now)
                if summary is not None:
                    found.append(summary)
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        stories = tuple(found[:limit])
        return StoryPage(stories, stories[-1].key if len(found) > limit else None)

    def _put_new(self, item: Mapping[str, object]) -> TransactWriteItemTypeDef:
        return {
            "Put": {
                "TableName": self._table,
                "Item": _to_item(item),
                "ConditionExpression": "attribute_not_exists(session_id)",
            }
        }

    @staticmethod
    def _beat_item(session: Session, beat: Beat) -> dict[str, object]:
        item: dict[str, object] = {
            "session_id": session.session_id,
            "timestamp": session.created_at_ms + beat.index,
            "item_type": "beat",
            "beat": beat.index,
            "text": beat.text,
            "choices": list(beat.choices),
            "ending": beat.ending,
            "created_at": beat.created_at_ms,
            "provider": beat.provider,
            "model": beat.model,
            "expires_at": session.expires_at,
        }
        if beat.from_choice is not None:
            item["from_choice"] = beat.from_choice
        if beat.index == 0:
            item.update(user_id=session.user_id, genre=session.genre, status=session.status)
            if session.premise is not None:
                item["premise"] = session.premise
        return item


def _key(session_id: str, timestamp: int = HEADER_TIMESTAMP) -> dict[str, Any]:
    return _to_item({"session_id": session_id, "timestamp": timestamp})


def _to_item(values: Mapping[str, object]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


def _plain(value: object) -> object:
    """DynamoDB numbers come back as Decimal; every number in this model is an integer."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, list):
        return [_plain(element) for element in value]
    return value


def _record_from_item(key_id: str, item: Mapping[str, Any]) -> IdempotencyRecord | None:
    if not item:
        return None
    stored = _from_item(item)
    return IdempotencyRecord(
        key_id=key_id,
        session_id=stored["session"],
        fingerprint=stored["fingerprint"],
        state=stored["state"],
        until_ms=stored.get("until", 0),
        expires_at=stored["expires_at"],
    )


def _summary_from_item(item: Mapping[str, Any], now: float) -> StorySummary | None:
    """The listing entry of an opening-beat item of `UserStoryIndex`, None if expired."""
    if item.get("item_type") != "beat" or item.get("beat") != 0 or item["expires_at"] <= now:
        return None
    return StorySummary(
        session_id=item["session_id"],
        genre=item["genre"],
        premise=item.get("premise"),
        status="completed" if item.get("status") == "completed" else "active",
        created_at_ms=item["timestamp"],
        expires_at=item["expires_at"],
    )


def _session_from_items(items: list[dict[str, Any]], now: float) -> Session | None:
    header = next(
        (
            item
            for item in items
            if item["timestamp"] == HEADER_TIMESTAMP and item.get("item_type") == "session"
        ),
        None,
    )
    if header is None or header["expires_at"] <= now:
        return None
    beat_items = sorted(
        (item for item in items if item.get("item_type") == "beat"), key=lambda item: item["beat"]
    )
    # Only the first `beat_count` beats are committed; the transaction writes both together,
    # so this is a guard against a partially expired session rather than an expected case.
    beat_items = beat_items[: header["beat_count"]]
    if not beat_items or beat_items[0]["beat"] != 0:
        return None
    beats = tuple(
        Beat(
            index=item["beat"],
            text=item["text"],
            choices=tuple(item["choices"]),
            ending=item["ending"],
            from_choice=item.get("from_choice"),
            created_at_ms=item["created_at"],
            provider=item["provider"],
            model=item["model"],
        )
        for item in beat_items
    )
    return Session(
        session_id=header["session_id"],
        user_id=beat_items[0]["user_id"],
        genre=header["genre"],
        premise=header.get("premise"),
        max_beats=header["max_beats"],
        created_at_ms=header["created_at"],
        expires_at=header["expires_at"],
        beats=beats,
    )


# Why DynamoDB cancelled a transaction item because of another writer: its condition
# failed (the other committed first), or a transaction in progress on the same item.
_LOST = frozenset({"ConditionalCheckFailed", "TransactionConflict"})


def _cancellation_reasons(error: ClientError) -> list[str] | None:
    """The reason code of each item of a cancelled transaction, or None if it was not one."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = error.response.get("CancellationReasons", [])
    return [str(reason.get("Code", "None")) for reason in reasons]


def _condition_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _failed_item(error: ClientError) -> Mapping[str, Any]:
    """The item a conditional write found (ReturnValuesOnConditionCheckFailure), or {}."""
    response: Mapping[str, Any] = error.response  # botocore's type does not name "Item"
    item: Mapping[str, Any] = response.get("Item") or {}
    return item
