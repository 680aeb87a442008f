"""The session stores: the same conditional semantics in memory and on DynamoDB (moto):
sessions, idempotency claims, choice leases and each reader's listing."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key

from lambdas.story_generator.sessions import (
    ChoicePending,
    ClaimLost,
    DynamoDBSessionStore,
    IdempotencyRecord,
    MemorySessionStore,
    PendingChoice,
    SessionExists,
    SessionStore,
    StaleSession,
    StoryKey,
    is_session_id,
)
from tests.lambdas.story_doubles import NOW, READER, clock, make_beat, make_session

NOW_MS = int(NOW * 1000)
LEASE = PendingChoice(choice=1, token="lease-1", until_ms=NOW_MS + 30_000)


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


def append(store: SessionStore, session: Any, beat: Any, lease: PendingChoice = LEASE) -> None:
    """Take the lease on the current beat and append `beat` under it."""
    store.reserve(session, lease, NOW_MS)
    store.append(session, beat, lease)


def test_append_adds_the_beat_after_the_ones_read(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    append(store, session, make_beat(1, from_choice=1))
    stored = store.get(session.session_id)
    assert stored == session.with_beat(make_beat(1, from_choice=1))
    assert stored is not None and stored.chosen(0) == 1


def test_append_on_a_stale_read_is_refused(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    append(store, session, make_beat(1, from_choice=0))
    with pytest.raises(StaleSession):
        store.reserve(session, replace(LEASE, token="late"), NOW_MS)
    with pytest.raises(StaleSession):
        store.append(session, make_beat(1, from_choice=1), LEASE)
    stored = store.get(session.session_id)
    assert stored is not None and stored.beats[1].from_choice == 0, "the first writer wins"


def test_a_live_lease_refuses_another_until_it_ends(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    store.reserve(session, LEASE, NOW_MS)
    other = PendingChoice(choice=0, token="lease-2", until_ms=NOW_MS + 60_000)
    with pytest.raises(ChoicePending) as caught:
        store.reserve(session, other, NOW_MS + 29_999)
    assert caught.value.pending == LEASE, "the duplicate learns which choice is pending"
    store.reserve(session, other, LEASE.until_ms)
    with pytest.raises(StaleSession):
        store.append(session, make_beat(1, from_choice=1), LEASE)
    store.append(session, make_beat(1, from_choice=0), other)
    stored = store.get(session.session_id)
    assert stored is not None and stored.chosen(0) == 0, "only the lease holder appends"


def test_releasing_a_lease_leaves_the_session_as_it_was(store: SessionStore) -> None:
    session = make_session()
    store.create(session)
    store.reserve(session, LEASE, NOW_MS)
    store.release(session, replace(LEASE, token="someone-else"))
    with pytest.raises(ChoicePending):
        store.reserve(session, replace(LEASE, token="lease-2"), NOW_MS)
    store.release(session, LEASE)
    assert store.get(session.session_id) == session
    store.reserve(session, replace(LEASE, token="lease-2"), NOW_MS)


def test_reserving_a_missing_session_is_stale(store: SessionStore) -> None:
    with pytest.raises(StaleSession):
        store.reserve(make_session(), LEASE, NOW_MS)


def claim(**fields: Any) -> IdempotencyRecord:
    values: dict[str, Any] = {
        "key_id": "idem#" + "ab" * 32,
        "session_id": str(uuid.uuid4()),
        "fingerprint": "f" * 64,
        "state": "in_progress",
        "until_ms": NOW_MS + 30_000,
        "expires_at": int(NOW) + 86_400,
    }
    return IdempotencyRecord(**(values | fields))


def test_a_claim_is_refused_while_another_is_live(store: SessionStore) -> None:
    first = claim()
    assert store.claim(first, NOW_MS) is None
    assert store.record(first.key_id) == first
    assert store.claim(claim(), NOW_MS + 29_999) == first, "the live claim is returned"
    taken_over = claim(until_ms=NOW_MS + 90_000)
    assert store.claim(taken_over, first.until_ms) is None, "a claim whose lease ran out"
    assert store.record(first.key_id) == taken_over


def test_creating_a_session_marks_its_claim_done(store: SessionStore) -> None:
    record = claim()
    session = make_session(record.session_id)
    store.claim(record, NOW_MS)
    store.create(session, record)
    done = store.record(record.key_id)
    assert done is not None and (done.state, done.session_id) == ("done", session.session_id)
    an_hour_later = NOW_MS + 3_600_000
    assert store.claim(claim(), an_hour_later) == done, "a done record outlives any lease"
    assert store.get(session.session_id) == session


def test_creating_under_a_lost_claim_writes_nothing(store: SessionStore) -> None:
    record = claim()
    store.claim(record, NOW_MS)
    store.claim(claim(), record.until_ms)  # the lease ran out: another request took over
    session = make_session(record.session_id)
    with pytest.raises(ClaimLost):
        store.create(session, record)
    assert store.get(session.session_id) is None


def test_releasing_a_claim_frees_the_key_for_this_claim_only(store: SessionStore) -> None:
    record = claim()
    store.claim(record, NOW_MS)
    store.release_claim(replace(record, session_id=str(uuid.uuid4())))
    assert store.record(record.key_id) == record, "another claim's release changes nothing"
    store.release_claim(record)
    assert store.record(record.key_id) is None
    assert store.claim(claim(), NOW_MS) is None


def test_an_expired_record_frees_the_key(store: SessionStore) -> None:
    record = claim(state="done", expires_at=int(NOW) - 1)
    assert store.claim(record, NOW_MS - 10_000_000) is None
    assert store.claim(claim(), NOW_MS) is None, "DynamoDB deletes expired items lazily"


def test_unknown_and_expired_sessions_are_not_found(store: SessionStore) -> None:
    expired = make_session(expires_at=int(NOW) - 1)
    store.create(expired)
    assert store.get(expired.session_id) is None, "DynamoDB deletes expired items lazily"
    assert store.get(str(uuid.uuid4())) is None


def started(store: SessionStore, offset_ms: int, user_id: str = READER, **fields: Any) -> Any:
    session = replace(make_session(), user_id=user_id, created_at_ms=NOW_MS - offset_ms, **fields)
    store.create(session)
    return session


def test_stories_lists_the_readers_sessions_newest_first_in_pages(store: SessionStore) -> None:
    sessions = [started(store, offset) for offset in (5_000, 1_000, 3_000, 2_000, 4_000)]
    started(store, 0, user_id="someone-else")
    started(store, 6_000, expires_at=int(NOW) - 1)
    newest_first = sorted(sessions, key=lambda session: -session.created_at_ms)
    pages, after = [], None
    while True:
        page = store.stories(READER, 2, after)
        pages.append([story.session_id for story in page.stories])
        if page.next is None:
            break
        after = page.next
    ids = [session.session_id for session in newest_first]
    assert pages == [ids[0:2], ids[2:4], ids[4:]], "no story twice, none left out"
    first = store.stories(READER, 1, None).stories[0]
    assert (first.genre, first.premise, first.status) == (
        "liminal",
        newest_first[0].premise,
        "active",
    )
    assert first.created_at_ms == newest_first[0].created_at_ms


def test_the_last_full_page_has_no_next(store: SessionStore) -> None:
    for offset in (1, 2):
        started(store, offset)
    assert store.stories(READER, 2, None).next is None
    assert store.stories(READER, 1, None).next is not None
    assert store.stories("nobody", 5, None).stories == ()


def test_a_story_is_listed_completed_once_it_ends(store: SessionStore) -> None:
    session = started(store, 0)
    append(store, session, make_beat(1, from_choice=0, ending=True))
    assert [story.status for story in store.stories(READER, 5, None).stories] == ["completed"]


def test_stories_resume_after_the_key(store: SessionStore) -> None:
    older, newer = started(store, 2), started(store, 1)
    after = StoryKey(newer.created_at_ms, newer.session_id)
    assert [s.session_id for s in store.stories(READER, 5, after).stories] == [older.session_id]


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
    append(dynamo_store, session, make_beat(1, from_choice=1))
    items = {int(item["timestamp"]): item for item in items_of(session_table, session.session_id)}
    created = session.created_at_ms
    assert sorted(items) == [0, created, created + 1]
    header, first, second = items[0], items[created], items[created + 1]
    assert header["item_type"] == "session" and header["beat_count"] == 2
    assert "user_id" not in header, "the header must stay out of UserStoryIndex"
    assert not {"pending_choice", "pending_token", "pending_until"} & set(header), (
        "the append drops the lease"
    )
    assert first["user_id"] == READER, "the opening beat lists the session by start time"
    assert (first["genre"], first["status"], first["premise"]) == (
        "liminal",
        "active",
        session.premise,
    ), "the index entry carries what the listing shows"
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
        append(dynamo_store, session, make_beat(1, from_choice=0))
    listed = (
        boto3.resource("dynamodb")
        .Table(session_table)
        .query(IndexName="UserStoryIndex", KeyConditionExpression=Key("user_id").eq(READER))
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


def test_idempotency_record_is_its_own_item_outside_the_index(
    dynamo_store: DynamoDBSessionStore, session_table: str
) -> None:
    record = claim()
    dynamo_store.claim(record, NOW_MS)
    dynamo_store.create(make_session(record.session_id), record)
    (item,) = items_of(session_table, record.key_id)
    assert item == {
        "session_id": record.key_id,
        "timestamp": 0,
        "item_type": "idempotency",
        "session": record.session_id,
        "fingerprint": record.fingerprint,
        "state": "done",
        "expires_at": record.expires_at,
    }, "no reader id nor key in clear, no user_id (kept out of UserStoryIndex)"
    assert dynamo_store.get(record.key_id) is None, "never read as a session"


def test_the_lease_lives_on_the_header_until_released(
    dynamo_store: DynamoDBSessionStore, session_table: str
) -> None:
    session = make_session()
    dynamo_store.create(session)
    dynamo_store.reserve(session, LEASE, NOW_MS)
    header = next(i for i in items_of(session_table, session.session_id) if i["timestamp"] == 0)
    assert (header["pending_choice"], header["pending_token"], header["pending_until"]) == (
        1,
        "lease-1",
        LEASE.until_ms,
    )
    dynamo_store.release(session, LEASE)
    header = next(i for i in items_of(session_table, session.session_id) if i["timestamp"] == 0)
    assert not {"pending_choice", "pending_token", "pending_until"} & set(header)
