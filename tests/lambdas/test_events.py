"""EventBridge in and out, on moto (a rule on the bus sends the events to SQS to read back)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from lambdas.devserver import LocalContext
from lambdas.story_generator.errors import NoProviderAvailable
from lambdas.story_generator.events import (
    REQUESTED,
    SOURCE,
    EventBridgePublisher,
    PublishedDetailType,
    story_events,
)
from lambdas.story_generator.handler import StoryHandler, build_handler
from lambdas.story_generator.settings import load_settings
from tests.lambdas.aws_fixtures import EventBus
from tests.lambdas.story_doubles import (
    READER,
    FakeRouter,
    beat_reply,
    invoke,
    make_beat,
    make_session,
)

START = {"genre": "horror"}
# What a producer on the bus sends to start a story for a reader.
START_DETAIL = {"action": "start", "reader_id": READER, **START}


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def handler(session_table: str, event_bus: EventBus, router: FakeRouter) -> StoryHandler:
    settings = load_settings(
        {
            "SESSION_TABLE_NAME": session_table,
            "EVENTS_ENABLED": "true",
            "EVENT_BUS_NAME": event_bus.name,
        }
    )
    return build_handler(settings, generator=router)


def requested(detail: object, event_id: str | None = None, **envelope: Any) -> dict[str, Any]:
    """An EventBridge envelope of a `Story Generation Requested` event."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": REQUESTED,
        "source": SOURCE,
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": detail,
        **envelope,
    }


def detail_types(events: list[dict[str, Any]]) -> list[str]:
    return [event["detail-type"] for event in events]


def test_story_publishes_beat_choice_and_completion_events(
    handler: StoryHandler, event_bus: EventBus, router: FakeRouter
) -> None:
    session_id = invoke(handler, "POST", "/stories", START).body["session_id"]
    published = event_bus.published()
    assert detail_types(published) == ["Story Beat Generated"]
    assert published[0]["source"] == "liminal-transit"
    assert published[0]["detail"]["session_id"] == session_id
    assert published[0]["detail"]["beat"]["index"] == 0
    assert published[0]["detail"]["provider"] == "fake"

    router.reply = lambda request: beat_reply("The end.", choices=0)
    invoke(handler, "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 2})
    published = event_bus.published()
    assert detail_types(published) == [
        "User Choice Made",
        "Story Beat Generated",
        "Story Completed",
    ]
    choice, beat, completed = (event["detail"] for event in published)
    assert choice == {
        "session_id": session_id,
        "user_id": READER,
        "beat": 0,
        "choice": 2,
        "choice_text": "Option 3",
    }
    assert beat["beat"]["ending"] is True
    assert completed == {
        "session_id": session_id,
        "user_id": READER,
        "genre": "horror",
        "beats": 2,
    }


def test_replayed_requests_publish_nothing(handler: StoryHandler, event_bus: EventBus) -> None:
    headers = {"Idempotency-Key": "k1"}
    session_id = invoke(handler, "POST", "/stories", START, headers).body["session_id"]
    invoke(handler, "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    event_bus.published()
    invoke(handler, "POST", "/stories", START, headers)
    invoke(handler, "POST", f"/stories/{session_id}/choices", {"beat": 0, "choice": 0})
    assert event_bus.published() == [], "a retry changes nothing, so it announces nothing"


def test_events_are_off_unless_enabled(
    session_table: str, event_bus: EventBus, router: FakeRouter
) -> None:
    settings = load_settings(
        {"SESSION_TABLE_NAME": session_table, "EVENT_BUS_NAME": event_bus.name}
    )
    handler = build_handler(settings, generator=router)
    assert invoke(handler, "POST", "/stories", START).status == 201
    assert event_bus.published() == []


class BrokenEvents:
    def put_events(self, **_: Any) -> Any:
        raise ConnectionError("EventBridge is unreachable")


class PartlyFailingEvents:
    def put_events(self, Entries: list[Any]) -> Any:  # noqa: N803 (the boto3 signature)
        return {
            "FailedEntryCount": 1,
            "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "boom"}],
        }


@pytest.mark.parametrize(
    ("client", "logged"),
    [
        (BrokenEvents(), "Publishing story events failed"),
        (PartlyFailingEvents(), "Some story events were not published"),
    ],
)
def test_failed_publish_never_fails_the_request(
    session_table: str,
    router: FakeRouter,
    client: Any,
    logged: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings({"SESSION_TABLE_NAME": session_table})
    publisher = EventBridgePublisher(client, "default")
    handler = build_handler(settings, generator=router, listener=publisher)
    reply = invoke(handler, "POST", "/stories", START)
    assert reply.status == 201
    assert invoke(handler, "GET", f"/stories/{reply.body['session_id']}").status == 200
    assert logged in caplog.text, "the failure is logged for operators"


def test_publishing_to_a_missing_bus_never_fails_the_request(
    session_table: str, event_bus: EventBus, router: FakeRouter, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        {"SESSION_TABLE_NAME": session_table, "EVENTS_ENABLED": "true", "EVENT_BUS_NAME": "gone"}
    )
    handler = build_handler(settings, generator=router)
    assert invoke(handler, "POST", "/stories", START).status == 201
    assert "ResourceNotFoundException" in caplog.text


def test_generation_requested_starts_a_story(handler: StoryHandler, event_bus: EventBus) -> None:
    result = handler(requested({**START_DETAIL, "premise": "Fog"}), LocalContext())
    assert result["status"] == "ok" and result["beat"] == 0
    session = invoke(handler, "GET", f"/stories/{result['session_id']}").body
    assert session["premise"] == "Fog" and len(session["beats"]) == 1
    assert detail_types(event_bus.published()) == ["Story Beat Generated"]


def test_redelivered_start_event_starts_one_story(
    handler: StoryHandler, router: FakeRouter
) -> None:
    event = requested({**START_DETAIL})
    first = handler(event, LocalContext())
    again = handler(event, LocalContext())
    assert first == again and len(router.requests) == 1, "the event id is the idempotency key"
    keyed = {**START_DETAIL, "idempotency_key": "client-key"}
    one = handler(requested(keyed), LocalContext())
    other = handler(requested(keyed), LocalContext())
    assert one["session_id"] == other["session_id"], "an explicit key wins over the event id"


def test_generation_requested_makes_a_choice(handler: StoryHandler) -> None:
    started = handler(requested({**START_DETAIL}), LocalContext())
    detail = {"action": "choose", "session_id": started["session_id"], "beat": 0, "choice": 1}
    result = handler(requested(detail), LocalContext())
    assert result == {"status": "ok", "session_id": started["session_id"], "beat": 1}
    assert handler(requested(detail), LocalContext()) == result, "redelivery is answered as stored"


@pytest.mark.parametrize(
    "detail",
    [
        None,
        "start",
        {},
        {"action": "stop", **START},
        {"action": "start", "genre": "horror"},
        {**START_DETAIL, "max_beats": 99},
        {**START_DETAIL, "unknown": 1},
        {**START_DETAIL, "user_id": READER},
        {**START_DETAIL, "reader_id": ""},
        {**START_DETAIL, "reader_id": "idem#x"},
        {"action": "choose", "session_id": "circuit#mock", "beat": 0, "choice": 0},
        {"action": "choose", "session_id": str(uuid.uuid4()), "beat": 0, "choice": 0},
    ],
)
def test_unusable_requests_are_rejected_not_retried(
    handler: StoryHandler, router: FakeRouter, detail: object
) -> None:
    result = handler(requested(detail), LocalContext())
    assert result["status"] == "rejected", "raising would make Lambda retry a hopeless event"
    assert result["error"]["code"] and result["error"]["message"]
    assert router.requests == []


def test_provider_outage_is_raised_so_lambda_retries_the_event(
    handler: StoryHandler, router: FakeRouter
) -> None:
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=30)
    with pytest.raises(NoProviderAvailable):
        handler(requested({**START_DETAIL}), LocalContext())


@pytest.mark.parametrize(
    "envelope",
    [
        {"detail-type": "Story Beat Generated"},
        {"detail-type": "User Choice Made"},
        {"detail-type": "Story Completed"},
        {"detail-type": "Something Else"},
        {"source": "liminal-transit.other"},
        {"source": "aws.events"},
    ],
)
def test_other_events_are_ignored(
    handler: StoryHandler, router: FakeRouter, event_bus: EventBus, envelope: dict[str, str]
) -> None:
    result = handler(requested({**START_DETAIL}, **envelope), LocalContext())
    assert result == {"status": "ignored"}
    assert router.requests == [] and event_bus.published() == []


def test_no_loop_published_events_fed_back_do_nothing(
    handler: StoryHandler, router: FakeRouter, event_bus: EventBus
) -> None:
    started = handler(requested({**START_DETAIL, "max_beats": 3}), LocalContext())
    for beat in (0, 1):
        detail = {
            "action": "choose",
            "session_id": started["session_id"],
            "beat": beat,
            "choice": 0,
        }
        handler(requested(detail), LocalContext())
    published = event_bus.published()
    assert set(detail_types(published)) == {
        "Story Beat Generated",
        "User Choice Made",
        "Story Completed",
    }
    generations = len(router.requests)
    for event in published:  # what the stack's rule would deliver back to the function
        assert handler(event, LocalContext()) == {"status": "ignored"}
    assert len(router.requests) == generations and event_bus.published() == []


def test_published_detail_types_never_include_the_request() -> None:
    assert REQUESTED not in {detail_type.value for detail_type in PublishedDetailType}


def test_story_events_follow_the_new_beat() -> None:
    session = make_session()
    assert [e.detail_type for e in story_events(session)] == [PublishedDetailType.BEAT_GENERATED]
    ended = session.with_beat(make_beat(1, from_choice=1, ending=True))
    assert [e.detail_type for e in story_events(ended)] == [
        PublishedDetailType.CHOICE_MADE,
        PublishedDetailType.BEAT_GENERATED,
        PublishedDetailType.COMPLETED,
    ]


def test_a_start_event_starts_the_story_of_its_reader(handler: StoryHandler) -> None:
    result = handler(requested({**START_DETAIL, "reader_id": "reader-7"}), LocalContext())
    path = f"/stories/{result['session_id']}"
    assert invoke(handler, "GET", path, claims={"sub": "reader-7"}).status == 200
    assert invoke(handler, "GET", path).status == 404, "it is reader-7's story only"


def test_a_redelivered_start_is_one_story_per_reader(
    handler: StoryHandler, router: FakeRouter
) -> None:
    event = requested(START_DETAIL)
    other = {**event, "detail": {**START_DETAIL, "reader_id": "reader-7"}}
    first, second = handler(event, LocalContext()), handler(other, LocalContext())
    assert first["session_id"] != second["session_id"], "the event id is each reader's key"
