"""The story service: starting, choosing, ownership, retries, races, leases, the reader
budget, failures and the beat format."""

from __future__ import annotations

import json
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from lambdas.story_generator.errors import (
    BadRequest,
    Conflict,
    GenerationBudgetExceeded,
    NoProviderAvailable,
    NotFound,
)
from lambdas.story_generator.generation import GenerationRequest, MalformedReply
from lambdas.story_generator.sessions import (
    Beat,
    DynamoDBSessionStore,
    IdempotencyRecord,
    MemorySessionStore,
    PendingChoice,
    SessionStore,
)
from lambdas.story_generator.story import (
    ChoiceRequest,
    StartStory,
    StoryService,
    build_request,
    idempotency_key_id,
    parse_beat,
)
from tests.lambdas.story_doubles import (
    READER,
    FakeRouter,
    Gate,
    RecordingBudget,
    RecordingListener,
    beat_reply,
)

START = StartStory(genre="liminal", premise="The 3:07 to nowhere")
OTHER_READER = "5e1f0d2c-7b8a-4c3d-9e0f-1a2b3c4d5e6f"


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
def budget() -> RecordingBudget:
    return RecordingBudget()


@pytest.fixture
def service(
    store: MemorySessionStore,
    router: FakeRouter,
    listener: RecordingListener,
    budget: RecordingBudget,
) -> StoryService:
    return StoryService(store, router, listener, ttl_days=30, budget=budget)


def test_start_stores_the_opening_beat_and_announces_it(
    service: StoryService, store: MemorySessionStore, listener: RecordingListener
) -> None:
    session = service.start(READER, START)
    assert store.get(session.session_id) == session
    assert [beat.index for beat in session.beats] == [0]
    assert session.beats[0].from_choice is None and len(session.beats[0].choices) == 3
    assert session.beats[0].provider == "fake"
    assert listener.sessions == [session]


def test_ttl_is_set_from_the_configured_days(service: StoryService) -> None:
    session = service.start(READER, START)
    assert session.expires_at == session.created_at_ms // 1000 + 30 * 86_400


def test_start_prompt_carries_genre_premise_and_format(
    service: StoryService, router: FakeRouter
) -> None:
    service.start(READER, START)
    request = router.requests[0]
    assert "liminal" in request.system and '"ending": true' in request.system
    assert request.messages[0].role == "user"
    assert "The 3:07 to nowhere" in request.messages[0].text


def test_start_with_the_same_idempotency_key_returns_the_stored_session(
    service: StoryService, router: FakeRouter
) -> None:
    first = service.start(READER, START, "key-1")
    again = service.start(READER, START, "key-1")
    assert again == first
    assert len(router.requests) == 1, "a retry must not generate again"


def test_idempotency_key_is_scoped_to_the_reader(service: StoryService) -> None:
    mine = service.start(READER, START, "key-1")
    theirs = service.start(OTHER_READER, START, "key-1")
    assert mine.session_id != theirs.session_id
    assert (mine.user_id, theirs.user_id) == (READER, OTHER_READER)
    assert service.start(OTHER_READER, START, "key-1") == theirs


def test_session_ids_are_random_even_for_the_same_key_and_body(service: StoryService) -> None:
    ids = [service.start(reader, START, "same-key").session_id for reader in (READER, "r2")]
    ids.append(service.start(READER, START).session_id)
    assert len(set(ids)) == 3
    for session_id in ids:
        assert uuid.UUID(session_id).version == 4, "122 random bits, nothing derived"
        assert uuid.UUID(session_id) != uuid.uuid5(uuid.NAMESPACE_URL, "same-key")


def test_the_idempotency_record_is_keyed_by_a_digest_of_reader_and_key(
    service: StoryService, store: MemorySessionStore
) -> None:
    session = service.start(READER, START, "key-1")
    key_id = idempotency_key_id(READER, "key-1")
    assert key_id.startswith("idem#") and READER not in key_id and "key-1" not in key_id
    record = store.record(key_id)
    assert record is not None and (record.session_id, record.state) == (session.session_id, "done")
    assert idempotency_key_id(READER, "key-1") != idempotency_key_id("key-1", READER)


def test_idempotency_key_reused_for_another_story_is_a_conflict(
    service: StoryService,
) -> None:
    service.start(READER, START, "key-1")
    with pytest.raises(Conflict) as caught:
        service.start(READER, StartStory(genre="horror"), "key-1")
    assert caught.value.code == "idempotency_key_reused"


def test_another_readers_session_is_not_found_like_an_unknown_one(service: StoryService) -> None:
    session = service.start(READER, START)
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(NotFound) as theirs:
        service.get(session.session_id, reader=OTHER_READER)
    with pytest.raises(NotFound) as missing:
        service.get(unknown, reader=OTHER_READER)
    assert theirs.value.code == missing.value.code == "session_not_found"
    assert theirs.value.message == missing.value.message.replace(unknown, session.session_id)
    with pytest.raises(NotFound):
        service.choose(session.session_id, ChoiceRequest(0, 0), reader=OTHER_READER)
    assert service.get(session.session_id, reader=READER) == session


def test_choice_appends_the_next_beat_from_a_prompt_with_the_choice(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(READER, START)
    beat = service.choose(session.session_id, ChoiceRequest(beat=0, choice=1), reader=READER)
    assert (beat.index, beat.from_choice) == (1, 1)
    stored = service.get(session.session_id, reader=READER)
    assert stored.beats[1] == beat and stored.chosen(0) == 1
    assert router.requests[1].messages[-1].text.startswith("The reader chooses: Option 2")
    assert listener.sessions[-1] == stored


def test_retried_choice_returns_the_stored_beat_without_generating(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(READER, START)
    first = service.choose(session.session_id, ChoiceRequest(beat=0, choice=2), reader=READER)
    again = service.choose(session.session_id, ChoiceRequest(beat=0, choice=2), reader=READER)
    assert again == first
    assert len(router.requests) == 2 and len(listener.sessions) == 2


def test_another_choice_on_an_answered_beat_is_a_conflict(service: StoryService) -> None:
    session = service.start(READER, START)
    service.choose(session.session_id, ChoiceRequest(beat=0, choice=0), reader=READER)
    with pytest.raises(Conflict) as caught:
        service.choose(session.session_id, ChoiceRequest(beat=0, choice=1), reader=READER)
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
    session = service.start(READER, START)  # the fake writes 3 choices
    with pytest.raises(BadRequest) as caught:
        service.choose(session.session_id, choice, reader=READER)
    assert caught.value.code == code


def test_unknown_session_is_not_found(service: StoryService) -> None:
    with pytest.raises(NotFound) as caught:
        service.get("00000000-0000-4000-8000-000000000000", reader=READER)
    assert caught.value.code == "session_not_found"


def test_story_ends_at_max_beats_even_if_the_model_goes_on(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(READER, StartStory(genre="mystery", max_beats=3))
    service.choose(session.session_id, ChoiceRequest(0, 0), reader=READER)
    last = service.choose(session.session_id, ChoiceRequest(1, 0), reader=READER)
    assert last.ending and last.choices == ()
    assert "is the last: end the story" in router.requests[-1].messages[-1].text
    assert service.get(session.session_id, reader=READER).status == "completed"
    with pytest.raises(Conflict) as caught:
        service.choose(session.session_id, ChoiceRequest(2, 0), reader=READER)
    assert caught.value.code == "story_completed"


def test_story_ends_when_the_model_says_so(service: StoryService, router: FakeRouter) -> None:
    session = service.start(READER, START)
    router.reply = lambda request: beat_reply("The train arrives. The end.", choices=0)
    beat = service.choose(session.session_id, ChoiceRequest(0, 0), reader=READER)
    assert beat.ending and service.get(session.session_id, reader=READER).status == "completed"


def test_failed_generation_leaves_the_session_unchanged(
    service: StoryService, router: FakeRouter, listener: RecordingListener
) -> None:
    session = service.start(READER, START)
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=30)
    with pytest.raises(NoProviderAvailable):
        service.choose(session.session_id, ChoiceRequest(0, 0), reader=READER)
    assert service.get(session.session_id, reader=READER) == session
    assert listener.sessions == [session], "nothing is announced for a beat never stored"
    router.fail = None
    assert service.choose(session.session_id, ChoiceRequest(0, 0), reader=READER).index == 1, (
        "the same request succeeds once a provider answers"
    )


def test_failed_start_stores_nothing(
    service: StoryService, router: FakeRouter, store: MemorySessionStore
) -> None:
    router.fail = NoProviderAvailable({"fake": "throttled"}, retry_after_s=5)
    with pytest.raises(NoProviderAvailable):
        service.start(READER, START, "key-1")
    router.fail = None
    session = service.start(READER, START, "key-1")
    assert len(router.requests) == 2, "the retry generates, since nothing was stored"
    assert store.get(session.session_id) == session


@pytest.fixture(params=["memory", "dynamodb"])
def any_store(request: pytest.FixtureRequest) -> SessionStore:
    if request.param == "memory":
        return MemorySessionStore()
    table = request.getfixturevalue("session_table")
    return DynamoDBSessionStore(request.getfixturevalue("serialised_dynamodb"), table)


@pytest.fixture
def shared(any_store: SessionStore, router: FakeRouter, budget: RecordingBudget) -> StoryService:
    """The service on either store, with the calls of several requests interleaved."""
    return StoryService(any_store, router, RecordingListener(), ttl_days=30, budget=budget)


def in_background(call: Any) -> Any:
    """Run `call` on another thread; `.result()` waits for its outcome."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def test_a_duplicate_choice_in_progress_is_a_409_and_then_the_stored_beat(
    shared: StoryService, router: FakeRouter, budget: RecordingBudget
) -> None:
    session = shared.start(READER, START)
    gate = Gate()
    router.before_reply = gate
    first = in_background(
        lambda: shared.choose(session.session_id, ChoiceRequest(0, 1), reader=READER)
    )
    assert gate.entered.wait(10)
    for choice in (1, 0):
        with pytest.raises(Conflict) as caught:
            shared.choose(session.session_id, ChoiceRequest(0, choice), reader=READER)
        assert (caught.value.code, caught.value.retry_after_header) == ("request_in_progress", "3")
    gate.open()
    beat = first.result(timeout=10)
    again = shared.choose(session.session_id, ChoiceRequest(0, 1), reader=READER)
    assert again == beat and len(router.requests) == 2, "one generation for the duplicates"
    assert budget.charged == [READER, READER], "a duplicate or a replay is never charged"
    with pytest.raises(Conflict) as caught:
        shared.choose(session.session_id, ChoiceRequest(0, 0), reader=READER)
    assert caught.value.code == "choice_already_made"


def test_a_duplicate_keyed_start_in_progress_is_a_409_and_then_the_stored_session(
    shared: StoryService, router: FakeRouter
) -> None:
    gate = Gate()
    router.before_reply = gate
    first = in_background(lambda: shared.start(READER, START, "key-1"))
    assert gate.entered.wait(10)
    with pytest.raises(Conflict) as same:
        shared.start(READER, START, "key-1")
    assert (same.value.code, same.value.retry_after_header) == ("request_in_progress", "3")
    with pytest.raises(Conflict) as different:
        shared.start(READER, StartStory(genre="horror"), "key-1")
    assert different.value.code == "idempotency_key_reused", "never the other request's story"
    gate.open()
    session = first.result(timeout=10)
    assert shared.start(READER, START, "key-1") == session and len(router.requests) == 1
    with pytest.raises(Conflict) as after:
        shared.start(READER, StartStory(genre="horror"), "key-1")
    assert after.value.code == "idempotency_key_reused"


def test_a_failed_choice_gives_its_lease_back(shared: StoryService, router: FakeRouter) -> None:
    session = shared.start(READER, START)
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=30)
    with pytest.raises(NoProviderAvailable):
        shared.choose(session.session_id, ChoiceRequest(0, 1), reader=READER)
    assert shared.get(session.session_id, reader=READER) == session
    router.fail = None
    beat = shared.choose(session.session_id, ChoiceRequest(0, 0), reader=READER)
    assert beat.from_choice == 0, "at once, even another choice: nothing is pending"


def test_a_failed_keyed_start_gives_its_claim_back(
    shared: StoryService, router: FakeRouter
) -> None:
    router.fail = NoProviderAvailable({"fake": "timeout"}, retry_after_s=30)
    with pytest.raises(NoProviderAvailable):
        shared.start(READER, START, "key-1")
    router.fail = None
    other = shared.start(READER, StartStory(genre="horror"), "key-1")
    assert other.genre == "horror", "the key started nothing, so it is free for any body"


def test_a_refused_budget_generates_nothing_and_gives_the_lease_back(
    shared: StoryService, router: FakeRouter, budget: RecordingBudget
) -> None:
    session = shared.start(READER, START)
    budget.refuse = GenerationBudgetExceeded(retry_after_s=42)
    with pytest.raises(GenerationBudgetExceeded):
        shared.choose(session.session_id, ChoiceRequest(0, 1), reader=READER)
    with pytest.raises(GenerationBudgetExceeded):
        shared.start(READER, START, "key-1")
    assert len(router.requests) == 1, "the budget is charged before the generation"
    budget.refuse = None
    assert shared.choose(session.session_id, ChoiceRequest(0, 1), reader=READER).index == 1
    assert shared.start(READER, START, "key-1").user_id == READER


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_that_ran_out_is_taken_over(
    any_store: SessionStore, router: FakeRouter, budget: RecordingBudget
) -> None:
    """A request that died mid-generation (its Lambda timed out, say, so it cleaned
    nothing up) blocks its key and its beat for one lease at most."""
    clock = Clock()
    service = StoryService(
        any_store, router, RecordingListener(), 30, budget=budget, lease_s=10, clock=clock
    )
    session = service.start(READER, START)
    now_ms = int(clock.now * 1000)
    any_store.reserve(session, PendingChoice(1, "dead", now_ms + 10_000), now_ms)
    any_store.claim(
        IdempotencyRecord(
            key_id=idempotency_key_id(READER, "key-1"),
            session_id=str(uuid.uuid4()),
            fingerprint=START.fingerprint(),
            state="in_progress",
            until_ms=now_ms + 10_000,
            expires_at=int(clock.now) + 86_400,
        ),
        now_ms,
    )
    clock.now += 9.9
    for attempt in (
        lambda: service.choose(session.session_id, ChoiceRequest(0, 1), reader=READER),
        lambda: service.start(READER, START, "key-1"),
    ):
        with pytest.raises(Conflict) as caught:
            attempt()
        assert caught.value.code == "request_in_progress"
    clock.now += 0.1
    assert service.choose(session.session_id, ChoiceRequest(0, 1), reader=READER).index == 1
    started = service.start(READER, START, "key-1")
    assert service.start(READER, START, "key-1") == started


def race(service: StoryService, router: FakeRouter, *choices: ChoiceRequest) -> list[Any]:
    """Make the choices at once: the first holds its generation while the others run."""
    session = service.start(READER, START)
    gate = Gate()
    router.before_reply = gate

    def choose(choice: ChoiceRequest) -> Any:
        try:
            return service.choose(session.session_id, choice, reader=READER)
        except Conflict as error:
            return error

    first = in_background(lambda: choose(choices[0]))
    assert gate.entered.wait(10)
    others = [choose(choice) for choice in choices[1:]]
    gate.open()
    return [first.result(timeout=10), *others]


def test_concurrent_different_choices_on_a_beat_one_wins_one_conflicts(
    shared: StoryService, router: FakeRouter
) -> None:
    outcomes = race(shared, router, ChoiceRequest(0, 0), ChoiceRequest(0, 1))
    beats = [outcome for outcome in outcomes if isinstance(outcome, Beat)]
    conflicts = [outcome for outcome in outcomes if isinstance(outcome, Conflict)]
    assert len(beats) == 1 and len(conflicts) == 1, outcomes
    assert conflicts[0].code == "request_in_progress"
    assert len(router.requests) == 2, "the loser never generated"


def test_start_story_from_json_applies_defaults() -> None:
    request = StartStory.from_json({"genre": "horror"})
    assert request == StartStory(genre="horror", premise=None, max_beats=12)
    assert request.fingerprint() == StartStory("horror", None, 12).fingerprint()
    assert request.fingerprint() != StartStory("horror", None, 11).fingerprint()


def test_a_body_naming_a_user_is_refused() -> None:
    with pytest.raises(BadRequest) as caught:
        StartStory.from_json({"user_id": "someone-else", "genre": "horror"})
    assert (caught.value.code, caught.value.details["field"]) == ("unknown_field", "user_id")


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
