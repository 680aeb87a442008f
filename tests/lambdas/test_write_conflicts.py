"""Lost races on the session table's conditional writes, and the story's retries of them.

DynamoDB cancels a transaction item with `ConditionalCheckFailed` when another writer
committed first, and with `TransactionConflict` when another transaction was in
progress on the same item (nobody committed); moto makes neither race. So:

- the DynamoDB store runs against botocore's `Stubber`: the exact requests it sends
  (conditions, `ConsistentRead`, pages) and what each refusal becomes (`ClaimLost`,
  `SessionExists`, `StaleSession`, `ChoicePending`, or the ClientError itself);
- the story service's write loops (`_WRITE_ATTEMPTS`) run over a store whose calls
  fail, or race with another request's writes, as each test scripts them; in memory,
  and on moto through a client that injects transaction conflicts;
- two different starts race on one Idempotency-Key on moto, ordered by events, not
  by sleeping.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from lambdas.story_generator.errors import Conflict, NoProviderAvailable
from lambdas.story_generator.sessions import (
    ChoicePending,
    ClaimLost,
    DynamoDBSessionStore,
    IdempotencyRecord,
    MemorySessionStore,
    PendingChoice,
    Session,
    SessionExists,
    SessionStore,
    StaleSession,
    StoryKey,
)
from lambdas.story_generator.story import (
    DEFAULT_LEASE_S,
    ChoiceRequest,
    StartStory,
    StoryService,
    idempotency_key_id,
)
from tests.lambdas.aws_fixtures import REGION
from tests.lambdas.story_doubles import (
    NOW,
    READER,
    FakeRouter,
    RecordingListener,
    clock,
    make_beat,
    make_session,
)
from tests.lambdas.test_sessions import LEASE, NOW_MS
from tests.lambdas.test_sessions import claim as new_claim
from tests.lambdas.test_story import START, Clock, in_background

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TABLE = "liminal-transit-story-sessions-test"
SESSION_ID = "0b9c6d1e-2f3a-4b5c-8d7e-9f0a1b2c3d4e"
HORROR = StartStory(genre="horror", premise="The last stop")
KEY = "key-1"
KEY_ID = idempotency_key_id(READER, KEY)

_serializer = TypeSerializer()


def wire(values: Mapping[str, object]) -> dict[str, Any]:
    """`values` as DynamoDB's wire format (the low-level client's attribute values)."""
    return {name: _serializer.serialize(value) for name, value in values.items()}


def key_of(session_id: str, timestamp: int = 0) -> dict[str, Any]:
    return wire({"session_id": session_id, "timestamp": timestamp})


def cancelled(*reasons: str) -> ClientError:
    """A TransactWriteItems cancellation, one reason code per item (`None`: that item passed)."""
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": reason} for reason in reasons],
        },
        "TransactWriteItems",
    )


# The DynamoDB store against a stubbed client.


@dataclass
class Stubbed:
    """A DynamoDB store whose client answers only what the test queued on `stub`."""

    store: DynamoDBSessionStore
    stub: Stubber

    def cancel(self, *reasons: str, expected: dict[str, Any] | None = None) -> None:
        """The next TransactWriteItems is cancelled for `reasons`."""
        self.stub.add_client_error(
            "transact_write_items",
            "TransactionCanceledException",
            "Transaction cancelled",
            expected_params=expected,
            modeled_fields={"CancellationReasons": [{"Code": reason} for reason in reasons]},
        )

    def refuse(
        self,
        method: str,
        code: str = "ConditionalCheckFailedException",
        expected: dict[str, Any] | None = None,
        item: dict[str, Any] | None = None,
    ) -> None:
        """The next `method` call fails with `code` (with the item a condition found)."""
        self.stub.add_client_error(
            method,
            code,
            "refused",
            expected_params=expected,
            modeled_fields=None if item is None else {"Item": item},
        )


@pytest.fixture
def stubbed() -> Iterator[Stubbed]:
    client = boto3.client(
        "dynamodb",
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stub:
        yield Stubbed(DynamoDBSessionStore(client, TABLE, clock=clock), stub)
        stub.assert_no_pending_responses()


def put_new() -> dict[str, Any]:
    return {
        "Put": {
            "TableName": TABLE,
            "Item": ANY,
            "ConditionExpression": "attribute_not_exists(session_id)",
        }
    }


def creation(record: IdempotencyRecord | None) -> dict[str, Any]:
    """The transaction `create` sends for `make_session()`: header, opening beat, claim."""
    items = [put_new(), put_new()]
    if record is not None:
        names = {"#state": "state", "#until": "until", "#session": "session"}
        values = {":done": "done", ":in_progress": "in_progress", ":session": record.session_id}
        items.append(
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": key_of(record.key_id),
                    "UpdateExpression": "SET #state = :done REMOVE #until",
                    "ConditionExpression": "#session = :session AND #state = :in_progress",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": wire(values),
                }
            }
        )
    return {"TransactItems": items}


@pytest.mark.parametrize("reason", ["TransactionConflict", "ConditionalCheckFailed"])
def test_create_whose_claim_item_lost_raises_claim_lost(stubbed: Stubbed, reason: str) -> None:
    record = new_claim()
    stubbed.cancel("None", "None", reason, expected=creation(record))
    with pytest.raises(ClaimLost):
        stubbed.store.create(make_session(record.session_id), record)


def test_create_raises_claim_lost_even_when_the_session_item_lost_too(stubbed: Stubbed) -> None:
    record = new_claim()
    stubbed.cancel("ConditionalCheckFailed", "None", "TransactionConflict")
    with pytest.raises(ClaimLost):
        stubbed.store.create(make_session(record.session_id), record)


@pytest.mark.parametrize(
    "reasons",
    [("ConditionalCheckFailed", "None", "None"), ("None", "TransactionConflict", "None")],
)
def test_create_whose_session_item_lost_under_a_live_claim_raises_session_exists(
    stubbed: Stubbed, reasons: tuple[str, ...]
) -> None:
    record = new_claim()
    stubbed.cancel(*reasons, expected=creation(record))
    with pytest.raises(SessionExists):
        stubbed.store.create(make_session(record.session_id), record)


@pytest.mark.parametrize(
    "reasons", [("ConditionalCheckFailed", "None"), ("None", "TransactionConflict")]
)
def test_create_without_a_claim_raises_session_exists_for_any_lost_item(
    stubbed: Stubbed, reasons: tuple[str, ...]
) -> None:
    stubbed.cancel(*reasons, expected=creation(None))
    with pytest.raises(SessionExists):
        stubbed.store.create(make_session())


@pytest.mark.parametrize(
    ("record", "reasons"),
    [
        (new_claim(), ("None", "None", "ValidationError")),
        (new_claim(), ("ValidationError", "None", "None")),
        (None, ("ValidationError", "None")),
    ],
)
def test_create_reraises_a_cancellation_that_no_other_writer_caused(
    stubbed: Stubbed, record: IdempotencyRecord | None, reasons: tuple[str, ...]
) -> None:
    stubbed.cancel(*reasons)
    with pytest.raises(ClientError) as caught:
        stubbed.store.create(make_session(), record)
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [reason["Code"] for reason in caught.value.response["CancellationReasons"]] == list(
        reasons
    )


@pytest.mark.parametrize("with_claim", [True, False])
def test_create_reraises_an_error_that_is_not_a_cancellation(
    stubbed: Stubbed, with_claim: bool
) -> None:
    stubbed.refuse("transact_write_items", "ProvisionedThroughputExceededException")
    with pytest.raises(ClientError) as caught:
        stubbed.store.create(make_session(), new_claim() if with_claim else None)
    assert caught.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"


def appending(ending: bool) -> dict[str, Any]:
    """The transaction `append` sends for beat 1 of `make_session()` under `LEASE`."""
    session = make_session(SESSION_ID)
    items: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": TABLE,
                "Key": key_of(SESSION_ID),
                "UpdateExpression": (
                    "SET beat_count = :next REMOVE pending_choice, pending_token, pending_until"
                ),
                "ConditionExpression": "beat_count = :read AND pending_token = :token",
                "ExpressionAttributeValues": wire({":read": 1, ":next": 2, ":token": LEASE.token}),
            }
        },
        put_new(),
    ]
    if ending:
        items.append(
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": key_of(SESSION_ID, session.created_at_ms),
                    "UpdateExpression": "SET #status = :completed",
                    "ConditionExpression": "attribute_exists(session_id)",
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": wire({":completed": "completed"}),
                }
            }
        )
    return {"TransactItems": items}


@pytest.mark.parametrize(
    ("reasons", "ending"),
    [
        (("ConditionalCheckFailed", "None"), False),
        (("TransactionConflict", "None"), False),
        (("None", "ConditionalCheckFailed"), False),
        (("None", "None", "TransactionConflict"), True),
    ],
)
def test_append_that_lost_any_item_raises_stale_session(
    stubbed: Stubbed, reasons: tuple[str, ...], ending: bool
) -> None:
    stubbed.cancel(*reasons, expected=appending(ending))
    with pytest.raises(StaleSession):
        stubbed.store.append(make_session(SESSION_ID), make_beat(1, 0, ending=ending), LEASE)


def test_append_reraises_other_cancellations_and_errors(stubbed: Stubbed) -> None:
    stubbed.cancel("ValidationError", "None")
    stubbed.refuse("transact_write_items", "InternalServerError")
    for code in ("TransactionCanceledException", "InternalServerError"):
        with pytest.raises(ClientError) as caught:
            stubbed.store.append(make_session(SESSION_ID), make_beat(1, 0), LEASE)
        assert caught.value.response["Error"]["Code"] == code


LIVE = new_claim(session_id="4a3b2c1d-0e9f-4a8b-9c7d-6e5f4a3b2c1d")


def record_item(record: IdempotencyRecord) -> dict[str, Any]:
    item: dict[str, object] = {
        "session_id": record.key_id,
        "timestamp": 0,
        "item_type": "idempotency",
        "session": record.session_id,
        "fingerprint": record.fingerprint,
        "state": record.state,
        "expires_at": record.expires_at,
    }
    if record.state == "in_progress":
        item["until"] = record.until_ms
    return wire(item)


def claiming(record: IdempotencyRecord) -> dict[str, Any]:
    """The PutItem `claim` sends for `record` at `NOW_MS`."""
    return {
        "TableName": TABLE,
        "Item": wire(
            {
                "session_id": record.key_id,
                "timestamp": 0,
                "item_type": "idempotency",
                "session": record.session_id,
                "fingerprint": record.fingerprint,
                "state": "in_progress",
                "until": record.until_ms,
                "expires_at": record.expires_at,
            }
        ),
        "ConditionExpression": (
            "attribute_not_exists(session_id) OR expires_at <= :now_s "
            "OR (#state = :in_progress AND #until <= :now_ms)"
        ),
        "ExpressionAttributeNames": {"#state": "state", "#until": "until"},
        "ExpressionAttributeValues": wire(
            {":now_s": NOW_MS // 1000, ":now_ms": NOW_MS, ":in_progress": "in_progress"}
        ),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def reading(key_id: str) -> dict[str, Any]:
    return {"TableName": TABLE, "Key": key_of(key_id), "ConsistentRead": True}


def test_claim_returns_the_live_record_its_condition_found_without_reading(
    stubbed: Stubbed,
) -> None:
    mine = new_claim()
    live = new_claim(state="done", until_ms=0, fingerprint="e" * 64)
    stubbed.refuse("put_item", expected=claiming(mine), item=record_item(live))
    assert stubbed.store.claim(mine, NOW_MS) == live


def test_claim_refused_without_the_item_reads_the_record_consistently(stubbed: Stubbed) -> None:
    mine, live = new_claim(), new_claim(until_ms=NOW_MS + 5_000)
    stubbed.refuse("put_item", expected=claiming(mine))
    stubbed.stub.add_response("get_item", {"Item": record_item(live)}, reading(mine.key_id))
    assert stubbed.store.claim(mine, NOW_MS) == live


def test_claim_refused_by_a_record_deleted_before_the_read_is_claim_lost(
    stubbed: Stubbed,
) -> None:
    mine = new_claim()
    stubbed.refuse("put_item")
    stubbed.stub.add_response("get_item", {}, reading(mine.key_id))
    with pytest.raises(ClaimLost):
        stubbed.store.claim(mine, NOW_MS)


def test_claim_reraises_other_errors_without_reading(stubbed: Stubbed) -> None:
    stubbed.refuse("put_item", "ProvisionedThroughputExceededException")
    with pytest.raises(ClientError) as caught:
        stubbed.store.claim(new_claim(), NOW_MS)
    assert caught.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"


def test_record_is_a_consistent_read(stubbed: Stubbed) -> None:
    stubbed.stub.add_response("get_item", {"Item": record_item(LIVE)}, reading(LIVE.key_id))
    stubbed.stub.add_response("get_item", {}, reading(LIVE.key_id))
    assert stubbed.store.record(LIVE.key_id) == LIVE
    assert stubbed.store.record(LIVE.key_id) is None


def session_items(session: Session) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and opening-beat items of a one-beat session, as the table holds them."""
    beat = session.beats[0]
    header = {
        "session_id": session.session_id,
        "timestamp": 0,
        "item_type": "session",
        "beat_count": 1,
        "genre": session.genre,
        "premise": session.premise,
        "max_beats": session.max_beats,
        "created_at": session.created_at_ms,
        "expires_at": session.expires_at,
    }
    opening = {
        "session_id": session.session_id,
        "timestamp": session.created_at_ms,
        "item_type": "beat",
        "beat": 0,
        "text": beat.text,
        "choices": list(beat.choices),
        "ending": beat.ending,
        "created_at": beat.created_at_ms,
        "provider": beat.provider,
        "model": beat.model,
        "expires_at": session.expires_at,
        "user_id": session.user_id,
        "genre": session.genre,
        "premise": session.premise,
        "status": "active",
    }
    return wire(header), wire(opening)


def test_get_is_a_consistent_query_that_follows_every_page(stubbed: Stubbed) -> None:
    session = make_session(SESSION_ID)
    header, opening = session_items(session)
    request = {
        "TableName": TABLE,
        "KeyConditionExpression": "session_id = :id",
        "ExpressionAttributeValues": {":id": {"S": SESSION_ID}},
        "ConsistentRead": True,
    }
    stubbed.stub.add_response(
        "query", {"Items": [header], "LastEvaluatedKey": key_of(SESSION_ID)}, request
    )
    stubbed.stub.add_response(
        "query", {"Items": [opening]}, request | {"ExclusiveStartKey": key_of(SESSION_ID)}
    )
    assert stubbed.store.get(SESSION_ID) == session


def test_get_of_an_id_that_is_no_session_id_reads_nothing(stubbed: Stubbed) -> None:
    assert stubbed.store.get(KEY_ID) is None
    assert stubbed.store.get(SESSION_ID.upper()) is None


def reserving(pending: PendingChoice) -> dict[str, Any]:
    """The UpdateItem `reserve` sends for `pending` on `make_session()` at `NOW_MS`."""
    return {
        "TableName": TABLE,
        "Key": key_of(SESSION_ID),
        "UpdateExpression": (
            "SET pending_choice = :choice, pending_token = :token, pending_until = :until"
        ),
        "ConditionExpression": (
            "beat_count = :count AND (attribute_not_exists(pending_until) OR pending_until <= :now)"
        ),
        "ExpressionAttributeValues": wire(
            {
                ":choice": pending.choice,
                ":token": pending.token,
                ":until": pending.until_ms,
                ":count": 1,
                ":now": NOW_MS,
            }
        ),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def header_with(beat_count: int, lease: PendingChoice | None) -> dict[str, Any]:
    values: dict[str, object] = {"session_id": SESSION_ID, "timestamp": 0, "beat_count": beat_count}
    if lease is not None:
        values |= {
            "pending_choice": lease.choice,
            "pending_token": lease.token,
            "pending_until": lease.until_ms,
        }
    return wire(values)


OTHER_LEASE = PendingChoice(choice=0, token="other", until_ms=NOW_MS + 7_000)


def test_reserve_takes_the_lease_on_the_beat_count_it_read(stubbed: Stubbed) -> None:
    stubbed.stub.add_response("update_item", {}, reserving(LEASE))
    stubbed.store.reserve(make_session(SESSION_ID), LEASE, NOW_MS)


@pytest.mark.parametrize(
    "header",
    [header_with(2, None), header_with(2, OTHER_LEASE), None],
    ids=["beat-added", "beat-added-and-leased", "session-gone"],
)
def test_reserve_refused_by_a_changed_or_missing_header_is_stale(
    stubbed: Stubbed, header: dict[str, Any] | None
) -> None:
    stubbed.refuse("update_item", expected=reserving(LEASE), item=header)
    with pytest.raises(StaleSession):
        stubbed.store.reserve(make_session(SESSION_ID), LEASE, NOW_MS)


def test_reserve_refused_by_a_live_lease_reports_it(stubbed: Stubbed) -> None:
    stubbed.refuse("update_item", item=header_with(1, OTHER_LEASE))
    with pytest.raises(ChoicePending) as caught:
        stubbed.store.reserve(make_session(SESSION_ID), LEASE, NOW_MS)
    assert caught.value.pending == OTHER_LEASE


def test_reserve_reraises_other_errors(stubbed: Stubbed) -> None:
    stubbed.refuse("update_item", "InternalServerError")
    with pytest.raises(ClientError) as caught:
        stubbed.store.reserve(make_session(SESSION_ID), LEASE, NOW_MS)
    assert caught.value.response["Error"]["Code"] == "InternalServerError"


RELEASING = {
    "TableName": TABLE,
    "Key": key_of(SESSION_ID),
    "UpdateExpression": "REMOVE pending_choice, pending_token, pending_until",
    "ConditionExpression": "pending_token = :token",
    "ExpressionAttributeValues": wire({":token": LEASE.token}),
}
RELEASING_CLAIM = {
    "TableName": TABLE,
    "Key": key_of(LIVE.key_id),
    "ConditionExpression": "#session = :session AND #state = :in_progress",
    "ExpressionAttributeNames": {"#session": "session", "#state": "state"},
    "ExpressionAttributeValues": wire({":session": LIVE.session_id, ":in_progress": "in_progress"}),
}


def release(store: DynamoDBSessionStore) -> None:
    store.release(make_session(SESSION_ID), LEASE)


def release_claim(store: DynamoDBSessionStore) -> None:
    store.release_claim(LIVE)


RELEASES = [
    pytest.param(release, "update_item", RELEASING, id="release"),
    pytest.param(release_claim, "delete_item", RELEASING_CLAIM, id="release_claim"),
]


@pytest.mark.parametrize(("give_back", "method", "expected"), RELEASES)
def test_giving_back_is_conditional_and_a_refusal_is_a_no_op(
    stubbed: Stubbed,
    give_back: Callable[[DynamoDBSessionStore], None],
    method: str,
    expected: dict[str, Any],
) -> None:
    stubbed.stub.add_response(method, {}, expected)
    stubbed.refuse(method, expected=expected)
    give_back(stubbed.store)
    give_back(stubbed.store)


@pytest.mark.parametrize(("give_back", "method", "expected"), RELEASES)
def test_giving_back_reraises_other_errors(
    stubbed: Stubbed,
    give_back: Callable[[DynamoDBSessionStore], None],
    method: str,
    expected: dict[str, Any],
) -> None:
    stubbed.refuse(method, "ProvisionedThroughputExceededException", expected=expected)
    with pytest.raises(ClientError) as caught:
        give_back(stubbed.store)
    assert caught.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"


def listed(offset_ms: int, expires_at: int = int(NOW) + 86_400) -> dict[str, Any]:
    """An opening-beat item of `UserStoryIndex`, started `offset_ms` before `NOW`."""
    return wire(
        {
            "session_id": str(uuid.UUID(int=offset_ms, version=4)),
            "timestamp": NOW_MS - offset_ms,
            "item_type": "beat",
            "beat": 0,
            "user_id": READER,
            "genre": "liminal",
            "status": "active",
            "expires_at": expires_at,
        }
    )


def index_key(item: dict[str, Any]) -> dict[str, Any]:
    return {name: item[name] for name in ("session_id", "timestamp", "user_id")}


LISTING = {
    "TableName": TABLE,
    "IndexName": "UserStoryIndex",
    "KeyConditionExpression": "user_id = :user",
    "ExpressionAttributeValues": {":user": {"S": READER}},
    "ScanIndexForward": False,
}


def test_stories_asks_each_page_for_what_the_listing_still_lacks(stubbed: Stubbed) -> None:
    """A page of 2 reads 3 stories (the third says whether a page follows); an expired
    story on the way does not count, so the next read asks for the one still missing."""
    first, expired, second, third = listed(1), listed(2, int(NOW)), listed(3), listed(4)
    stubbed.stub.add_response(
        "query",
        {"Items": [first, expired, second], "LastEvaluatedKey": index_key(second)},
        LISTING | {"Limit": 3},
    )
    stubbed.stub.add_response(
        "query",
        {"Items": [third], "LastEvaluatedKey": index_key(third)},
        LISTING | {"Limit": 1, "ExclusiveStartKey": index_key(second)},
    )
    page = stubbed.store.stories(READER, 2, None)
    ids = [story.session_id for story in page.stories]
    assert ids == [first["session_id"]["S"], second["session_id"]["S"]]
    assert page.next == StoryKey(NOW_MS - 3, second["session_id"]["S"])


def test_stories_resume_after_the_key_and_a_short_last_page_has_no_next(
    stubbed: Stubbed,
) -> None:
    after = StoryKey(NOW_MS - 1, str(uuid.UUID(int=1, version=4)))
    start = wire({"user_id": READER, "timestamp": after.timestamp, "session_id": after.session_id})
    stubbed.stub.add_response(
        "query",
        {"Items": [listed(2), listed(3)]},
        LISTING | {"Limit": 3, "ExclusiveStartKey": start},
    )
    page = stubbed.store.stories(READER, 2, after)
    assert [story.created_at_ms for story in page.stories] == [NOW_MS - 2, NOW_MS - 3]
    assert page.next is None


# The story service's write loops, over a store whose calls fail or race as scripted.

Step: TypeAlias = BaseException | Callable[..., object]


class ScriptedStore:
    """A session store that records its calls and, as scripted, fails or races them.

    `script[name]` holds what each next call of that method does first: raise the
    exception (nothing is written), or run the callable with the call's arguments
    (another request's writes, or a pause) before the real call.
    """

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.script: defaultdict[str, list[Step]] = defaultdict(list)
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.inner, name)

        def call(*args: Any) -> Any:
            with self._lock:
                self.calls.append((name, args))
                script = self.script[name]
                step = script.pop(0) if script else None
            if isinstance(step, BaseException):
                raise step
            if step is not None:
                step(*args)
            return method(*args)

        return call

    def names(self) -> list[str]:
        """The methods called, in order."""
        return [name for name, _ in self.calls]

    def args(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of each call of `name`."""
        return [args for called, args in self.calls if called == name]


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def memory() -> MemorySessionStore:
    return MemorySessionStore(clock=clock)


@pytest.fixture
def scripted(memory: MemorySessionStore) -> ScriptedStore:
    return ScriptedStore(memory)


@pytest.fixture
def service(
    scripted: ScriptedStore, router: FakeRouter, listener: RecordingListener
) -> StoryService:
    return StoryService(cast("SessionStore", scripted), router, listener, 30, clock=clock)


def status_and_code(caught: pytest.ExceptionInfo[Conflict]) -> tuple[int, str]:
    return caught.value.status, caught.value.code


CONCURRENT_UPDATE = (409, "concurrent_update")


def test_start_gives_up_after_three_lost_claims(
    service: StoryService, scripted: ScriptedStore, router: FakeRouter
) -> None:
    scripted.script["claim"] = [ClaimLost(KEY_ID) for _ in range(3)]
    with pytest.raises(Conflict) as caught:
        service.start(READER, START, KEY)
    assert status_and_code(caught) == CONCURRENT_UPDATE
    assert scripted.names() == ["claim"] * 3
    assert len({args[0].session_id for args in scripted.args("claim")}) == 3, "a new claim each"
    assert router.requests == [], "nothing is generated without a claim"


def test_start_takes_the_key_at_the_third_claim(
    service: StoryService, scripted: ScriptedStore, memory: MemorySessionStore
) -> None:
    scripted.script["claim"] = [ClaimLost(KEY_ID) for _ in range(2)]
    session = service.start(READER, START, KEY)
    assert scripted.names() == ["claim"] * 3 + ["create"]
    assert memory.get(session.session_id) == session
    record = memory.record(KEY_ID)
    assert record is not None and (record.state, record.session_id) == ("done", session.session_id)


def test_start_retries_a_create_that_conflicted_under_its_own_claim(
    service: StoryService,
    scripted: ScriptedStore,
    router: FakeRouter,
    listener: RecordingListener,
    memory: MemorySessionStore,
) -> None:
    scripted.script["create"] = [ClaimLost(KEY_ID) for _ in range(2)]
    session = service.start(READER, START, KEY)
    assert scripted.names() == ["claim", "create", "record", "create", "record", "create"]
    assert len(router.requests) == 1, "the retries write the beat generated once"
    assert memory.get(session.session_id) == session and listener.sessions == [session]


def test_start_gives_its_claim_back_after_three_conflicted_creates(
    service: StoryService,
    scripted: ScriptedStore,
    router: FakeRouter,
    listener: RecordingListener,
    memory: MemorySessionStore,
) -> None:
    scripted.script["create"] = [ClaimLost(KEY_ID) for _ in range(3)]
    with pytest.raises(Conflict) as caught:
        service.start(READER, START, KEY)
    assert status_and_code(caught) == CONCURRENT_UPDATE
    assert scripted.names() == ["claim", *["create", "record"] * 3, "release_claim"]
    claimed = scripted.args("claim")[0][0]
    assert scripted.args("release_claim") == [(claimed,)]
    assert memory.record(KEY_ID) is None and memory.get(claimed.session_id) is None
    assert len(router.requests) == 1 and listener.sessions == []


def taken_over(memory: MemorySessionStore, *, body: StartStory, done: bool) -> Step:
    """Another request takes over the key once this one's lease ran out (and stores its story)."""

    def take(session: Session, mine: IdempotencyRecord) -> None:
        theirs = replace(
            mine,
            session_id=str(uuid.uuid4()),
            fingerprint=body.fingerprint(),
            until_ms=mine.until_ms + 30_000,
        )
        assert memory.claim(theirs, mine.until_ms) is None
        if done:
            memory.create(replace(make_session(theirs.session_id), genre=body.genre), theirs)

    return take


@pytest.mark.parametrize(
    ("body", "code"), [(START, "request_in_progress"), (HORROR, "idempotency_key_reused")]
)
def test_start_whose_claim_another_request_took_answers_from_its_record(
    service: StoryService,
    scripted: ScriptedStore,
    memory: MemorySessionStore,
    listener: RecordingListener,
    body: StartStory,
    code: str,
) -> None:
    scripted.script["create"] = [taken_over(memory, body=body, done=False)]
    with pytest.raises(Conflict) as caught:
        service.start(READER, START, KEY)
    assert caught.value.code == code
    assert scripted.names() == ["claim", "create", "record"]
    assert memory.get(scripted.args("claim")[0][0].session_id) is None
    assert listener.sessions == []


def test_start_whose_claim_another_identical_start_completed_replays_its_session(
    service: StoryService,
    scripted: ScriptedStore,
    memory: MemorySessionStore,
    listener: RecordingListener,
) -> None:
    scripted.script["create"] = [taken_over(memory, body=START, done=True)]
    session = service.start(READER, START, KEY)
    record = memory.record(KEY_ID)
    assert record is not None and session == memory.get(record.session_id)
    assert session.session_id != scripted.args("claim")[0][0].session_id
    assert scripted.names() == ["claim", "create", "record", "get"]
    assert listener.sessions == [], "the replay announces nothing"


def released(memory: MemorySessionStore) -> Step:
    return lambda session, mine: memory.release_claim(mine)


def replaced_by_dead_record(memory: MemorySessionStore, **fields: Any) -> Step:
    def replace_claim(session: Session, mine: IdempotencyRecord) -> None:
        dead = replace(mine, session_id=str(uuid.uuid4()), **fields)
        assert memory.claim(dead, mine.until_ms) is None

    return replace_claim


@pytest.mark.parametrize(
    "step",
    [
        released,
        lambda memory: replaced_by_dead_record(memory, state="done", expires_at=int(NOW)),
        lambda memory: replaced_by_dead_record(memory, until_ms=NOW_MS),
    ],
    ids=["released", "expired", "lease-ran-out"],
)
def test_start_whose_record_is_gone_or_dead_is_a_concurrent_update(
    service: StoryService,
    scripted: ScriptedStore,
    memory: MemorySessionStore,
    step: Callable[[MemorySessionStore], Step],
) -> None:
    scripted.script["create"] = [step(memory)]
    with pytest.raises(Conflict) as caught:
        service.start(READER, START, KEY)
    assert status_and_code(caught) == CONCURRENT_UPDATE
    assert scripted.names() == ["claim", "create", "record"]


SESSION = make_session(SESSION_ID)


@pytest.fixture
def stored(memory: MemorySessionStore) -> Session:
    memory.create(SESSION)
    return SESSION


def test_choose_rereads_a_stale_session_and_takes_the_lease_again(
    service: StoryService, scripted: ScriptedStore, stored: Session, router: FakeRouter
) -> None:
    scripted.script["reserve"] = [StaleSession(SESSION_ID) for _ in range(2)]
    beat = service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert (beat.index, beat.from_choice) == (1, 1)
    assert scripted.names() == ["get", *["reserve", "get"] * 2, "reserve", "append"]
    assert len(router.requests) == 1


def test_choose_gives_up_after_three_stale_reads(
    service: StoryService,
    scripted: ScriptedStore,
    stored: Session,
    router: FakeRouter,
    memory: MemorySessionStore,
) -> None:
    scripted.script["reserve"] = [StaleSession(SESSION_ID) for _ in range(3)]
    with pytest.raises(Conflict) as caught:
        service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert status_and_code(caught) == CONCURRENT_UPDATE
    assert scripted.names() == ["get", *["reserve", "get"] * 3]
    assert router.requests == [] and memory.get(SESSION_ID) == stored


def answered_first(memory: MemorySessionStore, choice: int) -> Step:
    """Another request takes the lease and writes beat 1 (from `choice`) before this one."""

    def answer(session: Session, pending: PendingChoice, now_ms: int) -> None:
        memory.reserve(session, OTHER_LEASE, now_ms)
        memory.append(session, make_beat(1, from_choice=choice), OTHER_LEASE)

    return answer


def lease_taken_over(memory: MemorySessionStore) -> Step:
    """This request's lease runs out; another takes it and writes beat 1 (from choice 1)."""

    def answer(session: Session, beat: Any, pending: PendingChoice) -> None:
        memory.release(session, pending)
        memory.reserve(session, OTHER_LEASE, pending.until_ms)
        memory.append(session, make_beat(1, from_choice=1), OTHER_LEASE)

    return answer


def test_choose_returns_the_beat_another_request_stored_before_the_lease(
    service: StoryService,
    scripted: ScriptedStore,
    stored: Session,
    router: FakeRouter,
    memory: MemorySessionStore,
) -> None:
    scripted.script["reserve"] = [answered_first(memory, 1)]
    beat = service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert beat == make_beat(1, from_choice=1)
    assert scripted.names() == ["get", "reserve", "get"]
    assert router.requests == []


def test_choose_refuses_when_another_choice_was_stored_before_the_lease(
    service: StoryService, scripted: ScriptedStore, stored: Session, memory: MemorySessionStore
) -> None:
    scripted.script["reserve"] = [answered_first(memory, 0)]
    with pytest.raises(Conflict) as caught:
        service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert caught.value.code == "choice_already_made"


def test_choose_retries_an_append_that_conflicted(
    service: StoryService,
    scripted: ScriptedStore,
    stored: Session,
    router: FakeRouter,
    listener: RecordingListener,
    memory: MemorySessionStore,
) -> None:
    scripted.script["append"] = [StaleSession(SESSION_ID) for _ in range(2)]
    beat = service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert scripted.names() == ["get", "reserve", *["append", "get"] * 2, "append"]
    assert memory.get(SESSION_ID) == stored.with_beat(beat)
    assert len(router.requests) == 1 and listener.sessions == [stored.with_beat(beat)]


def test_choose_returns_the_beat_stored_by_the_request_that_took_over_its_lease(
    service: StoryService,
    scripted: ScriptedStore,
    stored: Session,
    listener: RecordingListener,
    memory: MemorySessionStore,
) -> None:
    scripted.script["append"] = [lease_taken_over(memory)]
    beat = service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert beat == make_beat(1, from_choice=1), "the stored beat, not the one generated here"
    assert memory.get(SESSION_ID) == stored.with_beat(beat)
    assert scripted.names() == ["get", "reserve", "append", "get"]
    assert listener.sessions == [], "only the writer announces its beat"


def test_choose_gives_its_lease_back_after_three_conflicted_appends(
    service: StoryService,
    scripted: ScriptedStore,
    stored: Session,
    listener: RecordingListener,
    memory: MemorySessionStore,
) -> None:
    scripted.script["append"] = [StaleSession(SESSION_ID) for _ in range(3)]
    with pytest.raises(Conflict) as caught:
        service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert status_and_code(caught) == CONCURRENT_UPDATE
    assert scripted.names() == ["get", "reserve", *["append", "get"] * 3, "release"]
    lease = scripted.args("reserve")[0][1]
    assert scripted.args("release") == [(stored, lease)]
    assert memory.get(SESSION_ID) == stored and listener.sessions == []
    memory.reserve(stored, OTHER_LEASE, NOW_MS)  # the beat is free again at once


def test_a_failed_generation_gives_back_exactly_the_lease_and_claim_it_took(
    service: StoryService,
    scripted: ScriptedStore,
    stored: Session,
    router: FakeRouter,
    memory: MemorySessionStore,
) -> None:
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=5)
    with pytest.raises(NoProviderAvailable):
        service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    with pytest.raises(NoProviderAvailable):
        service.start(READER, START, KEY)
    assert scripted.names() == ["get", "reserve", "release", "claim", "release_claim"]
    assert scripted.args("release") == [(stored, scripted.args("reserve")[0][1])]
    assert scripted.args("release_claim") == [(scripted.args("claim")[0][0],)]
    assert memory.get(SESSION_ID) == stored and memory.record(KEY_ID) is None
    memory.reserve(stored, OTHER_LEASE, NOW_MS)


def test_a_release_that_fails_does_not_hide_why_the_request_failed(
    service: StoryService, scripted: ScriptedStore, stored: Session
) -> None:
    scripted.script["append"] = [StaleSession(SESSION_ID) for _ in range(3)]
    scripted.script["release"] = [RuntimeError("table unreachable")]
    with pytest.raises(Conflict) as caught:
        service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert status_and_code(caught) == CONCURRENT_UPDATE


# On moto, with transaction conflicts injected by the client.


class FlakyClient:
    """A DynamoDB client (moto's) that records its calls and fails the next ones of a
    method with the ClientErrors queued in `failures[method]`, before they reach moto."""

    def __init__(self, client: DynamoDBClient) -> None:
        self._client = client
        self.calls: list[str] = []
        self.failures: defaultdict[str, list[ClientError]] = defaultdict(list)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            if self.failures[name]:
                raise self.failures[name].pop(0)
            return method(**kwargs)

        return call


@pytest.fixture
def flaky(dynamodb: DynamoDBClient) -> FlakyClient:
    return FlakyClient(dynamodb)


@pytest.fixture
def on_moto(flaky: FlakyClient, session_table: str) -> DynamoDBSessionStore:
    return DynamoDBSessionStore(cast("DynamoDBClient", flaky), session_table, clock=clock)


@pytest.fixture
def moto_service(
    on_moto: DynamoDBSessionStore, router: FakeRouter, listener: RecordingListener
) -> StoryService:
    return StoryService(on_moto, router, listener, 30, clock=clock)


def test_a_transaction_conflict_on_a_keyed_start_is_retried_on_dynamodb(
    moto_service: StoryService, on_moto: DynamoDBSessionStore, flaky: FlakyClient
) -> None:
    flaky.failures["transact_write_items"] = [cancelled("None", "None", "TransactionConflict")]
    session = moto_service.start(READER, START, KEY)
    assert flaky.calls == ["put_item", "transact_write_items", "get_item", "transact_write_items"]
    assert on_moto.get(session.session_id) == session
    record = on_moto.record(KEY_ID)
    assert record is not None and (record.state, record.session_id) == ("done", session.session_id)


def test_three_transaction_conflicts_leave_the_table_empty_on_dynamodb(
    moto_service: StoryService,
    flaky: FlakyClient,
    dynamodb: DynamoDBClient,
    session_table: str,
) -> None:
    flaky.failures["transact_write_items"] = [
        cancelled("None", "None", "TransactionConflict") for _ in range(3)
    ]
    with pytest.raises(Conflict) as caught:
        moto_service.start(READER, START, KEY)
    assert status_and_code(caught) == CONCURRENT_UPDATE
    assert flaky.calls == ["put_item", *["transact_write_items", "get_item"] * 3, "delete_item"]
    assert dynamodb.scan(TableName=session_table)["Items"] == [], "the claim was given back"


def test_a_transaction_conflict_on_an_append_is_retried_on_dynamodb(
    moto_service: StoryService, on_moto: DynamoDBSessionStore, flaky: FlakyClient
) -> None:
    on_moto.create(SESSION)
    flaky.calls.clear()
    flaky.failures["transact_write_items"] = [cancelled("TransactionConflict", "None")]
    beat = moto_service.choose(SESSION_ID, ChoiceRequest(0, 1), reader=READER)
    assert flaky.calls == [
        "query",
        "update_item",
        "transact_write_items",
        "query",
        "transact_write_items",
    ]
    assert on_moto.get(SESSION_ID) == SESSION.with_beat(beat)


# Two different starts racing on one key, on moto.


@dataclass
class RaceSetup:
    """A service on moto whose first `create` waits, once it is `entered`, for `resume`."""

    store: ScriptedStore
    service: StoryService
    router: FakeRouter
    clock: Clock
    entered: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.store.script["create"] = [self._pause]

    def _pause(self, *args: Any) -> None:
        self.entered.set()
        if not self.resume.wait(timeout=10):
            raise TimeoutError("the race was never resumed")

    @property
    def dynamodb(self) -> DynamoDBSessionStore:
        return cast("DynamoDBSessionStore", self.store.inner)


@pytest.fixture
def racing(session_table: str, serialised_dynamodb: DynamoDBClient) -> Iterator[RaceSetup]:
    moving = Clock()
    store = ScriptedStore(DynamoDBSessionStore(serialised_dynamodb, session_table, clock=moving))
    router = FakeRouter()
    service = StoryService(
        cast("SessionStore", store), router, RecordingListener(), 30, clock=moving
    )
    setup = RaceSetup(store, service, router, moving)
    yield setup
    setup.resume.set()


def test_a_different_start_racing_on_one_key_gets_a_409_never_the_other_story(
    racing: RaceSetup,
) -> None:
    first = in_background(lambda: racing.service.start(READER, START, KEY))
    assert racing.entered.wait(10), "the first start holds its claim, about to create"
    with pytest.raises(Conflict) as other:
        racing.service.start(READER, HORROR, KEY)
    assert (other.value.status, other.value.code) == (409, "idempotency_key_reused")
    with pytest.raises(Conflict) as same:
        racing.service.start(READER, START, KEY)
    assert (same.value.code, same.value.retry_after_header) == ("request_in_progress", "3")
    assert racing.store.names() == ["claim", "create", "claim", "claim"], "nothing else read"
    racing.resume.set()
    session = first.result(timeout=10)
    assert (session.genre, session.premise) == (START.genre, START.premise)
    with pytest.raises(Conflict) as after:
        racing.service.start(READER, HORROR, KEY)
    assert after.value.code == "idempotency_key_reused"
    assert racing.service.start(READER, START, KEY) == session
    assert len(racing.router.requests) == 1, "the losers never generated"
    listed = racing.dynamodb.stories(READER, 5, None).stories
    assert [story.session_id for story in listed] == [session.session_id]


def test_a_start_whose_lease_ran_out_loses_the_key_to_a_different_start(
    racing: RaceSetup,
) -> None:
    first = in_background(lambda: racing.service.start(READER, START, KEY))
    assert racing.entered.wait(10)
    racing.clock.now += DEFAULT_LEASE_S  # the first start's lease ends: its claim is free
    theirs = racing.service.start(READER, HORROR, KEY)
    racing.resume.set()
    with pytest.raises(Conflict) as lost:
        first.result(timeout=10)
    assert (lost.value.status, lost.value.code) == (409, "idempotency_key_reused")
    assert racing.store.names() == ["claim", "create", "claim", "create", "record"]
    ours = racing.store.args("create")[0][0]
    assert racing.dynamodb.get(ours.session_id) is None, "the loser stored nothing"
    record = racing.dynamodb.record(KEY_ID)
    assert record is not None and (record.state, record.session_id) == ("done", theirs.session_id)
    assert racing.service.start(READER, HORROR, KEY) == theirs
    assert theirs.genre == HORROR.genre and len(racing.router.requests) == 2


def test_a_different_start_after_the_first_completed_is_idempotency_key_reused(
    racing: RaceSetup,
) -> None:
    racing.resume.set()
    session = racing.service.start(READER, START, KEY)
    with pytest.raises(Conflict) as caught:
        racing.service.start(READER, HORROR, KEY)
    assert (caught.value.status, caught.value.code) == (409, "idempotency_key_reused")
    assert racing.store.names() == ["claim", "create", "claim"], "the other story is never read"
    assert racing.service.start(READER, START, KEY) == session
    assert len(racing.router.requests) == 1
