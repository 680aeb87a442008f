"""Story sessions and where they are kept.

DynamoDB item model (table keys: `session_id` S, `timestamp` N; GSI `UserStoryIndex` on
`user_id` + `timestamp`; TTL attribute `expires_at`):

- header, `timestamp = 0`: `item_type = "session"`, `beat_count` (the version every
  write is conditioned on), `genre`, `premise`, `max_beats`, `created_at` (epoch ms),
  `fingerprint` (of the request that started it, to answer idempotent retries).
- beat `i`, `timestamp = created_at + i`: `item_type = "beat"`, `beat`, `text`,
  `choices`, `ending`, `from_choice` (the choice on beat `i - 1` that led here, absent
  on the opening beat), `created_at`, `provider`, `model`. Only the opening beat carries
  `user_id`, so `UserStoryIndex` lists each session once, by start time.

Every item of a session carries the same `expires_at` (start + SESSION_TTL_DAYS), so a
session expires as a whole; reads treat an expired session as gone because DynamoDB
deletes expired items lazily. Session ids are UUIDs, which keeps them apart from the
router's circuit-breaker items (`session_id = "circuit#<provider>"`) in the same table.

A beat is appended with one transaction: the header's `beat_count` must still be the
count the caller read, and the new beat's key must be free. Two writers racing on the
same beat therefore get one success and one `StaleSession`.
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
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

SESSION_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)

HEADER_TIMESTAMP = 0


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
    """A story session with its beats in order; the last beat is the current one."""

    session_id: str
    user_id: str
    genre: str
    premise: str | None
    max_beats: int
    created_at_ms: int
    expires_at: int
    fingerprint: str
    beats: tuple[Beat, ...]

    @property
    def status(self) -> Literal["active", "completed"]:
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


class SessionExists(Exception):  # noqa: N818 (a state, not an error of the caller)
    """A session with this id already exists (an idempotent retry or a race on it)."""


class StaleSession(Exception):  # noqa: N818 (a state, not an error of the caller)
    """The session changed since it was read: another beat was written first."""


class SessionStore(Protocol):
    """Where sessions live. Writes are conditional, so concurrent writers never overwrite."""

    def create(self, session: Session) -> None:
        """Store a new session with its opening beat; raise `SessionExists` if the id is taken."""
        ...

    def get(self, session_id: str) -> Session | None:
        """The session, or None when it does not exist or has expired."""
        ...

    def append(self, session: Session, beat: Beat) -> None:
        """Add `beat` after `session.beats`; raise `StaleSession` if another beat came first."""
        ...


class MemorySessionStore:
    """`SessionStore` in memory, for local runs and tests, with the same conditional writes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, session: Session) -> None:
        """See `SessionStore.create`."""
        with self._lock:
            if session.session_id in self._sessions:
                raise SessionExists(session.session_id)
            self._sessions[session.session_id] = session

    def get(self, session_id: str) -> Session | None:
        """See `SessionStore.get`."""
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None or session.expires_at <= self._clock():
            return None
        return session

    def append(self, session: Session, beat: Beat) -> None:
        """See `SessionStore.append`."""
        with self._lock:
            stored = self._sessions.get(session.session_id)
            if stored is None or len(stored.beats) != len(session.beats):
                raise StaleSession(session.session_id)
            self._sessions[session.session_id] = stored.with_beat(beat)


_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class DynamoDBSessionStore:
    """`SessionStore` on the story-session table (item model in the module docstring)."""

    def __init__(
        self, client: DynamoDBClient, table_name: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock

    def create(self, session: Session) -> None:
        """See `SessionStore.create`."""
        header: dict[str, object] = {
            "session_id": session.session_id,
            "timestamp": HEADER_TIMESTAMP,
            "item_type": "session",
            "beat_count": len(session.beats),
            "genre": session.genre,
            "max_beats": session.max_beats,
            "created_at": session.created_at_ms,
            "fingerprint": session.fingerprint,
            "expires_at": session.expires_at,
        }
        if session.premise is not None:
            header["premise"] = session.premise
        items: list[TransactWriteItemTypeDef] = [self._put_new(header)]
        items += [self._put_new(self._beat_item(session, beat)) for beat in session.beats]
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if _lost_race(error):
                raise SessionExists(session.session_id) from error
            raise

    def get(self, session_id: str) -> Session | None:
        """See `SessionStore.get`."""
        if not is_session_id(session_id):
            return None
        pages = self._client.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="session_id = :id",
            ExpressionAttributeValues={":id": {"S": session_id}},
            ConsistentRead=True,
        )
        items = [_from_item(item) for page in pages for item in page.get("Items", [])]
        return _session_from_items(items, now=self._clock())

    def append(self, session: Session, beat: Beat) -> None:
        """See `SessionStore.append`."""
        header_update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self._table,
                "Key": _to_item({"session_id": session.session_id, "timestamp": HEADER_TIMESTAMP}),
                "UpdateExpression": "SET beat_count = :next",
                "ConditionExpression": "beat_count = :read",
                "ExpressionAttributeValues": _to_item(
                    {":read": len(session.beats), ":next": len(session.beats) + 1}
                ),
            }
        }
        try:
            self._client.transact_write_items(
                TransactItems=[header_update, self._put_new(self._beat_item(session, beat))]
            )
        except ClientError as error:
            if _lost_race(error):
                raise StaleSession(session.session_id) from error
            raise

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
            item["user_id"] = session.user_id
        return item


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
        fingerprint=header["fingerprint"],
        beats=beats,
    )


def _lost_race(error: ClientError) -> bool:
    """Whether a transaction was cancelled because of another writer.

    Either its condition failed (the other writer committed first) or DynamoDB cancelled
    it for a transaction in progress on the same item (`TransactionConflict`); in both
    cases the caller re-reads the session to learn who won.
    """
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    reasons = error.response.get("CancellationReasons", [])
    return any(
        reason.get("Code") in {"ConditionalCheckFailed", "TransactionConflict"}
        for reason in reasons
    )
