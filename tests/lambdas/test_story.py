"""The story service: starting, choosing, retries, races, failures and the beat format."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from lambdas.story_generator.errors import (
    BadRequest,
    Conflict,
    NoProviderAvailable,
    NotFound,
)
from lambdas.story_generator.generation import GenerationRequest, MalformedReply
from lambdas.story_generator.sessions import (
    Beat,
    DynamoDBSessionStore,
    MemorySessionStore,
    Session,
)
from lambdas.story_generator.story import (
    ChoiceRequest,
    StartStory,
    StoryService,
    build_request,
    parse_beat,
)
from tests.lambdas.story_doubles import FakeRouter, RecordingListener, beat_reply

START = StartStory(user_id="reader-1", genre="liminal", premise="The 3:07 to nowhere")


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def store() -> MemorySessionStore:
    return MemorySessionStore()


@pytest.fixture
def service(
    store: MemorySessionStore, router: FakeRouter, listener: RecordingListener
) -> StoryService:
    return StoryService(store, router, listener, ttl_days=30)


def test_start_stores_the_opening_beat_and_announces_it(
    service: StoryService, store: MemorySessionStore, listener: RecordingListener
) -> None:
    session = service.start(START)
    assert store.get(session.session_id) == session
    assert [beat.index for beat in session.beats] == [0]
    assert session.beats[0].from_choice is None and len(session.beats[0].choices) == 3
    assert session.beats[0].provider == "fake"
    assert listener.sessions == [session]


def test_ttl_is_set_from_the_configured_days(service: StoryService) -> None:
    session = service.start(START)
    assert session.expires_at == session.created_at_ms // 1000 + 30 * 86_400


def test_start_prompt_carries_genre_premise_and_format(
    service: StoryService, router: FakeRouter
) -> None:
    service.start(START)
    request = router.requests[0]
    assert "liminal" in request.system and '"ending": true' in request.system
    assert request.messages[0].role == "user"
    assert "The 3:07 to nowhere" in request.messages[0].text


def test_start_with_the_same_idempotency_key_returns_the_stored_session(
    service: StoryService, router: FakeRouter
) -> None:
    first = service.start(START, idempotency_key="key-1")
    again = service.start(START, idempotency_key="key-1")
    assert again == first
    assert len(router.requests) == 1, "a retry must not generate again"


def test_idempotency_key_is_scoped_to_the_user(service: StoryService) -> None:
    mine = service.start(START, idempotency_key="key-1")
    theirs = service.start(StartStory(user_id="reader-2", genre="liminal"), "key-1")
    assert mine.session_id != theirs.session_id


def test_idempotency_key_reused_for_another_story_is_a_conflict(
    service: StoryService,
) -> None:
    service.start(START, idempotency_key="key-1")
    with pytest.raises(Conflict) as caught:
        service.start(StartStory(user_id="reader-1", genre="horror"), "key-1")
    assert caught.value.code == "idempotency_key_reused"


def test_choice_appends_the_next_beat_from_a_prompt_with_the_choice(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(START)
    beat = service.choose(session.session_id, ChoiceRequest(beat=0, choice=1))
    assert (beat.index, beat.from_choice) == (1, 1)
    stored = service.get(session.session_id)
    assert stored.beats[1] == beat and stored.chosen(0) == 1
    assert router.requests[1].messages[-1].text.startswith("The reader chooses: Option 2")
    assert listener.sessions[-1] == stored


def test_retried_choice_returns_the_stored_beat_without_generating(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(START)
    first = service.choose(session.session_id, ChoiceRequest(beat=0, choice=2))
    again = service.choose(session.session_id, ChoiceRequest(beat=0, choice=2))
    assert again == first
    assert len(router.requests) == 2 and len(listener.sessions) == 2


def test_another_choice_on_an_answered_beat_is_a_conflict(service: StoryService) -> None:
    session = service.start(START)
    service.choose(session.session_id, ChoiceRequest(beat=0, choice=0))
    with pytest.raises(Conflict) as caught:
        service.choose(session.session_id, ChoiceRequest(beat=0, choice=1))
    assert caught.value.code == "choice_already_made"
    assert caught.value.details == {"beat": 0, "chosen": 0, "current_beat": 1}


@pytest.mark.parametrize(
    ("choice", "code"),
    [
        (ChoiceRequest(beat=1, choice=0), "beat_out_of_range"),
        (ChoiceRequest(0, 3), "choice_out_of_range"),
    ],
)
def test_choices_the_beat_does_not_offer_are_bad_requests(
    service: StoryService, choice: ChoiceRequest, code: str
) -> None:
    session = service.start(START)  # the fake writes 3 choices
    with pytest.raises(BadRequest) as caught:
        service.choose(session.session_id, choice)
    assert caught.value.code == code


def test_unknown_session_is_not_found(service: StoryService) -> None:
    with pytest.raises(NotFound) as caught:
        service.get("00000000-0000-4000-8000-000000000000")
    assert caught.value.code == "session_not_found"


def test_story_ends_at_max_beats_even_if_the_model_goes_on(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(StartStory(user_id="reader-1", genre="mystery", max_beats=3))
    service.choose(session.session_id, ChoiceRequest(0, 0))
    last = service.choose(session.session_id, ChoiceRequest(1, 0))
    assert last.ending and last.choices == ()
    assert "is the last: end the story" in router.requests[-1].messages[-1].text
    assert service.get(session.session_id).status == "completed"
    with pytest.raises(Conflict) as caught:
        service.choose(session.session_id, ChoiceRequest(2, 0))
    assert caught.value.code == "story_completed"


def test_story_ends_when_the_model_says_so(service: StoryService, router: FakeRouter) -> None:
    session = service.start(START)
    router.reply = lambda request: beat_reply("The train arrives. The end.", choices=0)
    beat = service.choose(session.session_id, ChoiceRequest(0, 0))
    assert beat.ending and service.get(session.session_id).status == "completed"


def test_failed_generation_leaves_the_session_unchanged(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(START)
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=30)
    with pytest.raises(NoProviderAvailable):
        service.choose(session.session_id, ChoiceRequest(0, 0))
    assert service.get(session.session_id) == session
    assert listener.sessions == [session], "nothing is announced for a beat never stored"
    router.fail = None
    assert service.choose(session.session_id, ChoiceRequest(0, 0)).index == 1, (
        "the same request succeeds once a provider answers"
    )


def test_failed_start_stores_nothing(
    service: StoryService, router: FakeRouter, store: MemorySessionStore
) -> None:
    router.fail = NoProviderAvailable({"fake": "throttled"}, retry_after_s=5)
    with pytest.raises(NoProviderAvailable):
        service.start(START, idempotency_key="key-1")
    router.fail = None
    session = service.start(START, idempotency_key="key-1")
    assert len(router.requests) == 2, "the retry generates, since nothing was stored"
    assert store.get(session.session_id) == session


class SerialisedStore(DynamoDBSessionStore):
    """moto applies concurrent transactions without isolation; DynamoDB serialises them.

    The lock gives moto DynamoDB's atomicity; it does not order the callers.
    """

    _lock = threading.Lock()

    def append(self, session: Session, beat: Beat) -> None:
        with self._lock:
            super().append(session, beat)


@pytest.fixture
def racing_service(session_table: str, router: FakeRouter) -> StoryService:
    store = SerialisedStore(boto3.client("dynamodb"), session_table)
    return StoryService(store, router, RecordingListener(), ttl_days=30)


def race(service: StoryService, router: FakeRouter, *choices: ChoiceRequest) -> list[Any]:
    """Run the choices at once; each has read the session before any of them writes."""
    session = service.start(START)
    barrier = threading.Barrier(len(choices), timeout=10)
    router.before_reply = barrier.wait

    def choose(choice: ChoiceRequest) -> Any:
        try:
            return service.choose(session.session_id, choice)
        except Conflict as error:
            return error

    with ThreadPoolExecutor(len(choices)) as pool:
        return list(pool.map(choose, choices))


def test_concurrent_different_choices_on_a_beat_one_wins_one_conflicts(
    racing_service: StoryService, router: FakeRouter
) -> None:
    outcomes = race(racing_service, router, ChoiceRequest(0, 0), ChoiceRequest(0, 1))
    beats = [outcome for outcome in outcomes if isinstance(outcome, Beat)]
    conflicts = [outcome for outcome in outcomes if isinstance(outcome, Conflict)]
    assert len(beats) == 1 and len(conflicts) == 1, outcomes
    assert conflicts[0].code == "choice_already_made"


def test_concurrent_identical_choices_both_get_the_stored_beat(
    racing_service: StoryService, router: FakeRouter
) -> None:
    first, second = race(racing_service, router, ChoiceRequest(0, 1), ChoiceRequest(0, 1))
    assert isinstance(first, Beat) and first == second, "the loser answers from what was stored"


def test_start_story_from_json_applies_defaults() -> None:
    request = StartStory.from_json({"user_id": "u", "genre": "horror"})
    assert request == StartStory(user_id="u", genre="horror", premise=None, max_beats=12)
    assert request.fingerprint() == StartStory("u", "horror", None, 12).fingerprint()
    assert request.fingerprint() != StartStory("u", "horror", None, 11).fingerprint()


def test_build_request_replays_the_story_as_a_conversation() -> None:
    beats = (
        Beat(0, "Opening", ("Left", "Right"), False, None, 0, "p", "m"),
        Beat(1, "Middle", ("Up", "Down"), False, 1, 1, "p", "m"),
    )
    request = build_request("horror", None, 5, beats, chosen="Down")
    assert isinstance(request, GenerationRequest)
    roles = [message.role for message in request.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert json.loads(request.messages[1].text)["text"] == "Opening"
    assert request.messages[2].text == "The reader chooses: Right"
    assert request.messages[4].text.startswith("The reader chooses: Down\nWrite beat 3 of")


def reply(**fields: Any) -> str:
    return json.dumps({"text": "A beat.", "choices": ["A", "B"], **fields})


@pytest.mark.parametrize(
    "text",
    [
        reply(),
        reply(ending=False),
        f"```json\n{reply()}\n```",
        f"  {reply(choices=['A', 'B', 'C', 'D'])}\n",
    ],
)
def test_parse_beat_accepts_well_formed_replies(text: str) -> None:
    draft = parse_beat(text, opening=True, final=False)
    assert draft.text == "A beat." and not draft.ending and len(draft.choices) >= 2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Once upon a time", "not JSON"),
        (f"Here you go: {reply()}", "not JSON"),
        ("[]", "must be an object"),
        (json.dumps({"choices": ["A", "B"]}), "`reply.text` is required"),
        (reply(title="x"), "`reply.title` is not a known field"),
        (reply(text=""), "`reply.text` must be 1 to 4000"),
        (reply(choices="A or B"), "`reply.choices` must be an array"),
        (reply(choices=["A"]), "2 to 4 choices"),
        (reply(choices=["A", "B", "C", "D", "E"]), "`reply.choices` must hold 0 to 4"),
        (reply(choices=["A", 2]), "`reply.choices[1]` must be a string"),
        (reply(choices=["A", "x" * 201]), "`reply.choices[1]` must be 1 to 200"),
        (reply(choices=["Run", " run"]), "not distinct"),
        (reply(ending="yes"), "`reply.ending` must be true or false"),
        (reply(ending=True), "an ending has no choices"),
        (reply(choices=[], ending=True), "the opening beat cannot end the story"),
    ],
)
def test_parse_beat_rejects_anything_else(text: str, problem: str) -> None:
    with pytest.raises(MalformedReply, match=re.escape(problem)):
        parse_beat(text, opening=True, final=False)


def test_parse_beat_turns_the_last_beat_into_the_ending() -> None:
    draft = parse_beat(reply(), opening=False, final=True)
    assert draft.ending and draft.choices == ()
    with pytest.raises(MalformedReply):
        parse_beat(reply(choices=["A"]), opening=False, final=True)
