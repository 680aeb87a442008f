"""EventBridge in and out (source `liminal-transit`).

In: `Story Generation Requested` events start a story or make a choice, exactly as
the API does. Out: `User Choice Made`, `Story Beat Generated` and `Story Completed`
after each stored beat, on EVENT_BUS_NAME when EVENTS_ENABLED.

The stack's rule sends all four story detail-types to this function, so it must
never feed itself: it only acts on `Story Generation Requested` from
`liminal-transit`, ignores everything else, and never publishes that detail-type
(`PublishedDetailType` cannot name it).

Requests come from producers allowed to put events on the stack's own bus, not
from readers: a start names the reader it is for (`reader_id`, validated like a
token's `sub`), and a choice acts for the reader of its session.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from .errors import ApiError
from .sessions import SESSION_ID_PATTERN, Session
from .story import (
    CHOICE_SCHEMA,
    IDEMPOTENCY_KEY_SCHEMA,
    READER_ID_SCHEMA,
    START_STORY_SCHEMA,
    ChoiceRequest,
    StartStory,
    StoryService,
    beat_json,
)
from .validation import validate

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

logger = Logger(child=True)

SOURCE = "liminal-transit"
REQUESTED = "Story Generation Requested"


class PublishedDetailType(StrEnum):
    """The detail-types this function publishes (never `Story Generation Requested`)."""

    CHOICE_MADE = "User Choice Made"
    BEAT_GENERATED = "Story Beat Generated"
    COMPLETED = "Story Completed"


@dataclass(frozen=True)
class StoryEvent:
    """One event to publish."""

    detail_type: PublishedDetailType
    detail: Mapping[str, object]


def story_events(session: Session) -> list[StoryEvent]:
    """The events that follow from `session.current` having just been stored."""
    beat = session.current
    ids = {"session_id": session.session_id, "user_id": session.user_id}
    events = []
    if beat.from_choice is not None:
        previous = session.beats[beat.index - 1]
        events.append(
            StoryEvent(
                PublishedDetailType.CHOICE_MADE,
                {
                    **ids,
                    "beat": previous.index,
                    "choice": beat.from_choice,
                    "choice_text": previous.choices[beat.from_choice],
                },
            )
        )
    events.append(
        StoryEvent(
            PublishedDetailType.BEAT_GENERATED,
            {
                **ids,
                "genre": session.genre,
                "beat": beat_json(beat),
                "provider": beat.provider,
                "model": beat.model,
            },
        )
    )
    if beat.ending:
        events.append(
            StoryEvent(
                PublishedDetailType.COMPLETED,
                {**ids, "genre": session.genre, "beats": len(session.beats)},
            )
        )
    return events


class EventBridgePublisher:
    """Publishes the story events of each stored beat; a failure is logged, never raised."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def beat_written(self, session: Session) -> None:
        """Publish the events of `session.current` (one PutEvents call, at most 3 entries)."""
        self.publish(story_events(session))

    def publish(self, events: Sequence[StoryEvent]) -> None:
        """Put `events` on the bus; the reader's request never fails because of it."""
        entries: list[PutEventsRequestEntryTypeDef] = [
            {
                "Source": SOURCE,
                "DetailType": event.detail_type.value,
                "Detail": json.dumps(event.detail, ensure_ascii=False, separators=(",", ":")),
                "EventBusName": self._bus_name,
            }
            for event in events
        ]
        try:
            response = self._client.put_events(Entries=entries)
        except Exception:
            logger.exception("Publishing story events failed", extra={"bus": self._bus_name})
            return
        if response.get("FailedEntryCount", 0):
            failures = [
                {"detail_type": entry["DetailType"], "error": result.get("ErrorCode")}
                for entry, result in zip(entries, response["Entries"], strict=False)
                if "ErrorCode" in result
            ]
            logger.error("Some story events were not published", extra={"failures": failures})


class NoEvents:
    """The listener when EVENTS_ENABLED is false: publishes nothing."""

    def beat_written(self, session: Session) -> None:
        """Do nothing."""


_ACTION = {"type": "string", "enum": ["start", "choose"]}
START_DETAIL_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "action": _ACTION,
        "reader_id": READER_ID_SCHEMA,
        **START_STORY_SCHEMA["properties"],
        "idempotency_key": IDEMPOTENCY_KEY_SCHEMA,
    },
    "required": ["action", "reader_id", *START_STORY_SCHEMA["required"]],
    "additionalProperties": False,
}
CHOOSE_DETAIL_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "action": _ACTION,
        "session_id": {"type": "string", "pattern": SESSION_ID_PATTERN},
        **CHOICE_SCHEMA["properties"],
    },
    "required": ["action", "session_id", *CHOICE_SCHEMA["required"]],
    "additionalProperties": False,
}


def handle_event(service: StoryService, event: Mapping[str, Any]) -> dict[str, object]:
    """Act on a `Story Generation Requested` event; ignore every other event.

    `detail` is `{"action": "start", "reader_id", <POST /stories body>,
    "idempotency_key"?}` or `{"action": "choose", "session_id", "beat", "choice"}`. A
    start without an `idempotency_key` uses the event id (as the reader's key), so a
    redelivered event starts no second story.
    A request that cannot succeed (a 4xx) is logged and dropped; a server-side failure,
    such as a provider outage, is raised so that Lambda retries the event and, in the
    end, sends it to the dead-letter queue.
    """
    detail_type, source = event.get("detail-type"), event.get("source")
    if source != SOURCE or detail_type != REQUESTED:
        logger.info("Ignoring event", extra={"source": source, "detail_type": detail_type})
        return {"status": "ignored"}
    detail = event.get("detail")
    choose = isinstance(detail, dict) and detail.get("action") == "choose"
    try:
        validate(detail, CHOOSE_DETAIL_SCHEMA if choose else START_DETAIL_SCHEMA, "detail")
        assert isinstance(detail, dict)  # the schema says so
        if choose:
            choice = ChoiceRequest(beat=detail["beat"], choice=detail["choice"])
            beat = service.choose(detail["session_id"], choice, reader=None)
            return {"status": "ok", "session_id": detail["session_id"], "beat": beat.index}
        fields = {name: detail[name] for name in START_STORY_SCHEMA["properties"] if name in detail}
        event_id = event.get("id")
        key = detail.get("idempotency_key") or (event_id if isinstance(event_id, str) else None)
        session = service.start(detail["reader_id"], StartStory(**fields), key)
        return {"status": "ok", "session_id": session.session_id, "beat": 0}
    except ApiError as error:
        if error.status >= 500:
            raise
        logger.warning(
            "Rejected story event", extra={"event_id": event.get("id"), **error.to_body()}
        )
        return {"status": "rejected", **error.to_body()}
