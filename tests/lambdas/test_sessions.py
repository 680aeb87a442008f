"""The session stores: the same conditional semantics in memory and on DynamoDB (moto)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key

from lambdas.story_generator.sessions import (
    DynamoDBSessionStore,
    MemorySessionStore,
    SessionExists,
    SessionStore,
    StaleSession,
    is_session_id,
)
from tests.lambdas.story_doubles import NOW, clock, make_beat, make_session


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> SessionStore:
    if request.param == "memory":
        return MemorySessionStore(clock=clock)
    table = request.getfixturevalue("session_table")
    return DynamoDBSessionStore(boto3.client("dynamodb"), table, clock=clock)


def test_created_session_reads_back_equal(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    assert store.get(session.session_id) == session


def test_session_without_premise_reads_back_equal(store: SessionStore) -> None:
    session = replace(make_session(), premise=None)
    store.create(session)
    assert store.get(session.session_id) == session


def test_create_refuses_an_existing_id(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    with pytest.raises(SessionExists):
        store.create(replace(session, genre="horror"))
    assert store.get(session.session_id) == session, "the first session must stay as written"


def test_append_adds_the_beat_after_the_ones_read(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    store.append(session, make_beat(1, from_choice=1))
    stored = store.get(session.session_id)
    assert stored == session.with_beat(make_beat(1, from_choice=1))
    assert stored is not None and stored.chosen(0) == 1


def test_append_on_a_stale_read_is_refused(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    store.append(session, make_beat(1, from_choice=0))
    with pytest.raises(StaleSession):
        store.append(session, make_beat(1, from_choice=1))
    stored = store.get(session.session_id)
    assert stored is not None and stored.beats[1].from_choice == 0, "the first writer wins"


def test_unknown_and_expired_sessions_are_not_found(store: SessionStore) -> None:
    expired = make_session(expires_at=int(NOW) - 1)
    store.create(expired)
    assert store.get(expired.session_id) is None, "DynamoDB deletes expired items lazily"
    assert store.get(str(uuid.uuid4())) is None


def test_session_status_follows_the_last_beat() -> None:
    session = make_session()
    assert session.status == "active"
    assert session.with_beat(make_beat(1, 0, ending=True)).status == "completed"


def test_session_ids_are_canonical_uuids() -> None:
    assert is_session_id(str(uuid.uuid4()))
    assert not is_session_id(str(uuid.uuid4()).upper())
    assert not is_session_id("circuit#bedrock-claude")
    assert not is_session_id(f"{uuid.uuid4()}\n")


@pytest.fixture
def dynamo_store(session_table: str) -> DynamoDBSessionStore:
    return DynamoDBSessionStore(boto3.client("dynamodb"), session_table, clock=clock)


def items_of(table: str, session_id: str) -> list[dict[str, Any]]:
    resource = boto3.resource("dynamodb").Table(table)
    return resource.query(KeyConditionExpression=Key("session_id").eq(session_id))["Items"]


def test_item_model_header_at_zero_and_one_item_per_beat(
    dynamo_store: DynamoDBSessionStore, session_table: str
) -> None:
    session = make_session()
    dynamo_store.create(session)
    dynamo_store.append(session, make_beat(1, from_choice=1))
    items = {int(item["timestamp"]): item for item in items_of(session_table, session.session_id)}
    created = session.created_at_ms
    assert sorted(items) == [0, created, created + 1]
    header, first, second = items[0], items[created], items[created + 1]
    assert header["item_type"] == "session" and header["beat_count"] == 2
    assert "user_id" not in header, "the header must stay out of UserStoryIndex"
    assert first["user_id"] == "reader-1", "the opening beat lists the session by start time"
    assert "user_id" not in second, "one index entry per session"
    assert second["from_choice"] == 1 and second["choices"] == ["Left", "Right"]
    assert {int(item["expires_at"]) for item in items.values()} == {session.expires_at}, (
        "every item of a session carries the same TTL"
    )


def test_user_story_index_lists_each_session_once_by_start_time(
    dynamo_store: DynamoDBSessionStore, session_table: str
) -> None:
    older = make_session()
    newer = replace(make_session(), created_at_ms=older.created_at_ms + 5_000)
    for session in (older, newer):
        dynamo_store.create(session)
        dynamo_store.append(session, make_beat(1, from_choice=0))
    listed = (
        boto3.resource("dynamodb")
        .Table(session_table)
        .query(IndexName="UserStoryIndex", KeyConditionExpression=Key("user_id").eq("reader-1"))
    )["Items"]
    assert [item["session_id"] for item in listed] == [older.session_id, newer.session_id]


def test_circuit_items_in_the_same_table_are_never_read_as_sessions(
    dynamo_store: DynamoDBSessionStore, session_table: str
) -> None:
    client = boto3.client("dynamodb")
    client.put_item(
        TableName=session_table,
        Item={
            "session_id": {"S": "circuit#bedrock-claude"},
            "timestamp": {"N": "0"},
            "failures": {"N": "3"},
        },
    )
    assert dynamo_store.get("circuit#bedrock-claude") is None
