"""The story: starting a session, making a choice, reading a session back.

Each beat is written by the AI router from a prompt that holds the whole story so
far; the model answers in JSON (`{"text", "choices", "ending"}`) and the reply is
parsed strictly, so an unusable reply counts as that provider's failure and the
router falls back to the next one. Nothing is stored before a beat has been
generated, so a failed generation leaves the session as it was, and every request
can be retried: a retried start (same Idempotency-Key) or choice (same beat and
choice) is answered from what was stored, without a new generation.

A story is completed when the model ends it (`ending: true`, no choices) or when it
reaches its `max_beats`: the prompt then asks for the ending, and the beat written
there ends the story whatever the model answered.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from .errors import BadRequest, Conflict, NotFound
from .generation import Generation, GenerationRequest, MalformedReply, Message
from .sessions import Beat, Session, SessionExists, SessionStore, StaleSession
from .validation import validate

GENRES = (
    "liminal",
    "fantasy",
    "science-fiction",
    "mystery",
    "horror",
    "adventure",
    "romance",
    "comedy",
    "historical",
)
MIN_BEATS, DEFAULT_MAX_BEATS, MAX_BEATS = 3, 12, 30
MIN_CHOICES, MAX_CHOICES = 2, 4
MAX_BEAT_TEXT, MAX_CHOICE_TEXT = 4000, 200

USER_ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._@:+-]*$",
}
START_STORY_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "user_id": USER_ID_SCHEMA,
        "genre": {"type": "string", "enum": list(GENRES)},
        "premise": {"type": "string", "minLength": 1, "maxLength": 1000},
        "max_beats": {"type": "integer", "minimum": MIN_BEATS, "maximum": MAX_BEATS},
    },
    "required": ["user_id", "genre"],
    "additionalProperties": False,
}
# Any printable ASCII, like most clients' keys (UUIDs, ULIDs, random tokens).
IDEMPOTENCY_KEY_SCHEMA: Mapping[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[!-~]+$",
}
CHOICE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "beat": {"type": "integer", "minimum": 0, "maximum": MAX_BEATS - 1},
        "choice": {"type": "integer", "minimum": 0, "maximum": MAX_CHOICES - 1},
    },
    "required": ["beat", "choice"],
    "additionalProperties": False,
}
# What the model must answer; the rules between fields are checked in `parse_beat`.
BEAT_REPLY_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": MAX_BEAT_TEXT},
        "choices": {
            "type": "array",
            "maxItems": MAX_CHOICES,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_CHOICE_TEXT},
        },
        "ending": {"type": "boolean"},
    },
    "required": ["text", "choices"],
    "additionalProperties": False,
}

_IDEMPOTENCY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://liminal-transit/story-sessions")
# A lost race on a write is retried this many times before the caller gets a 409
# (only a DynamoDB transaction conflict, where nobody committed, needs more than one).
_WRITE_ATTEMPTS = 3

T = TypeVar("T")


@dataclass(frozen=True)
class StartStory:
    """A validated request to start a story."""

    user_id: str
    genre: str
    premise: str | None = None
    max_beats: int = DEFAULT_MAX_BEATS

    @classmethod
    def from_json(cls, value: object) -> StartStory:
        """Validate a decoded JSON body against `START_STORY_SCHEMA`."""
        validate(value, START_STORY_SCHEMA)
        assert isinstance(value, dict)
        return cls(**value)

    def fingerprint(self) -> str:
        """A digest of the request, to tell an idempotent retry from a reused key."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChoiceRequest:
    """A validated choice: option `choice` (0-based) of beat `beat`."""

    beat: int
    choice: int

    @classmethod
    def from_json(cls, value: object) -> ChoiceRequest:
        """Validate a decoded JSON body against `CHOICE_SCHEMA`."""
        validate(value, CHOICE_SCHEMA)
        assert isinstance(value, dict)
        return cls(**value)


@dataclass(frozen=True)
class Draft:
    """A beat as the model wrote it, before it is placed in a session."""

    text: str
    choices: tuple[str, ...]
    ending: bool


class BeatGenerator(Protocol):
    """The AI router, as the story uses it."""

    def generate(
        self, request: GenerationRequest, accept: Callable[[str], T]
    ) -> tuple[T, Generation]:
        """Ask the providers in turn until one reply passes `accept`."""
        ...


class BeatListener(Protocol):
    """Told about every beat once it is stored (the EventBridge publisher)."""

    def beat_written(self, session: Session) -> None:
        """`session.current` has just been stored; must not raise."""
        ...


class StoryService:
    """Starts stories, records choices and reads sessions back."""

    def __init__(
        self,
        store: SessionStore,
        generator: BeatGenerator,
        listener: BeatListener,
        ttl_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._generator = generator
        self._listener = listener
        self._ttl_s = ttl_days * 86_400
        self._clock = clock

    def start(self, request: StartStory, idempotency_key: str | None = None) -> Session:
        """Start a session and write its opening beat.

        With an `idempotency_key` the session id is derived from it and the user, so a
        retry finds the session the first attempt stored and gets it back unchanged.
        """
        if idempotency_key is None:
            session_id = str(uuid.uuid4())
        else:
            name = json.dumps([request.user_id, idempotency_key])
            session_id = str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, name))
            stored = self._store.get(session_id)
            if stored is not None:
                return _same_start(stored, request)
        draft, generation = self._generate(request.genre, request.premise, request.max_beats, ())
        now_ms = self._now_ms()
        session = Session(
            session_id=session_id,
            user_id=request.user_id,
            genre=request.genre,
            premise=request.premise,
            max_beats=request.max_beats,
            created_at_ms=now_ms,
            expires_at=now_ms // 1000 + self._ttl_s,
            fingerprint=request.fingerprint(),
            beats=(_beat(0, draft, None, now_ms, generation),),
        )
        try:
            self._store.create(session)
        except SessionExists:
            stored = self._store.get(session_id)
            if stored is None:
                raise Conflict(
                    "A session for this Idempotency-Key is being written or has expired; "
                    "retry shortly, or use a new key for a new story.",
                    code="idempotency_key_in_use",
                ) from None
            return _same_start(stored, request)
        self._listener.beat_written(session)
        return session

    def choose(self, session_id: str, request: ChoiceRequest) -> Beat:
        """Record the reader's choice and return the beat it leads to."""
        session = self.get(session_id)
        stored = _answered(session, request)
        if stored is not None:
            return stored
        chosen = session.current.choices[request.choice]
        draft, generation = self._generate(
            session.genre, session.premise, session.max_beats, session.beats, chosen
        )
        beat = _beat(len(session.beats), draft, request.choice, self._now_ms(), generation)
        for _ in range(_WRITE_ATTEMPTS):
            try:
                self._store.append(session, beat)
            except StaleSession:
                session = self.get(session_id)
                stored = _answered(session, request)
                if stored is not None:
                    return stored
                continue
            self._listener.beat_written(session.with_beat(beat))
            return beat
        raise Conflict(
            "Another request kept changing this session; read it again and retry.",
            code="concurrent_update",
        )

    def get(self, session_id: str) -> Session:
        """The session, or `NotFound`."""
        session = self._store.get(session_id)
        if session is None:
            raise NotFound(
                f"No story session {session_id}: it never existed or has expired; "
                "start a new story with POST /stories.",
                code="session_not_found",
            )
        return session

    def _generate(
        self,
        genre: str,
        premise: str | None,
        max_beats: int,
        beats: Sequence[Beat],
        chosen: str | None = None,
    ) -> tuple[Draft, Generation]:
        index = len(beats)
        final = index == max_beats - 1
        request = build_request(genre, premise, max_beats, beats, chosen)
        return self._generator.generate(
            request, lambda text: parse_beat(text, opening=index == 0, final=final)
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _beat(
    index: int, draft: Draft, from_choice: int | None, now_ms: int, generation: Generation
) -> Beat:
    return Beat(
        index=index,
        text=draft.text,
        choices=draft.choices,
        ending=draft.ending,
        from_choice=from_choice,
        created_at_ms=now_ms,
        provider=generation.provider,
        model=generation.model,
    )


def _same_start(stored: Session, request: StartStory) -> Session:
    """The stored session when `request` is a retry of the one that created it."""
    if stored.fingerprint != request.fingerprint():
        raise Conflict(
            "This Idempotency-Key was already used to start a different story; "
            "use a new key for a new story.",
            code="idempotency_key_reused",
        )
    return stored


def _answered(session: Session, request: ChoiceRequest) -> Beat | None:
    """The stored answer to `request` if it was already made, or None if it is new.

    Raises when the choice cannot be made: a beat that does not exist, an option the
    beat does not have, another choice already made on that beat, or an ended story.
    """
    current = session.current
    if request.beat > current.index:
        raise BadRequest(
            f"`beat` {request.beat} does not exist: the story is at beat {current.index}.",
            code="beat_out_of_range",
            details={"field": "beat"},
        )
    if request.beat < current.index:
        chosen = session.chosen(request.beat)
        if chosen == request.choice:
            return session.beats[request.beat + 1]
        raise Conflict(
            f"Choice {chosen} was already made on beat {request.beat}; the story is now at "
            f"beat {current.index}. Read the session again and choose on its current beat.",
            code="choice_already_made",
            details={"beat": request.beat, "chosen": chosen, "current_beat": current.index},
        )
    if current.ending:
        raise Conflict(
            f"The story has ended at beat {current.index}; start a new story with POST /stories.",
            code="story_completed",
        )
    if request.choice >= len(current.choices):
        raise BadRequest(
            f"`choice` must be 0 to {len(current.choices) - 1}: beat {current.index} "
            f"has {len(current.choices)} choices.",
            code="choice_out_of_range",
            details={"field": "choice"},
        )
    return None


def build_request(
    genre: str,
    premise: str | None,
    max_beats: int,
    beats: Sequence[Beat],
    chosen: str | None = None,
) -> GenerationRequest:
    """The prompt for the beat after `beats`, reached by the choice `chosen`.

    The story so far is replayed as a conversation: each beat as the assistant's
    JSON reply, each choice as the reader's turn.
    """
    system = (
        f"You are the narrator of an interactive {genre} story on Liminal Transit, "
        "told in the second person and present tense, one beat at a time. A beat is one "
        "to three short paragraphs that end at a decision for the reader. "
        "Answer with one JSON object and nothing else: "
        '{"text": "<the beat>", "choices": ["<option>", "<option>"], "ending": false} '
        f"with {MIN_CHOICES} to {MAX_CHOICES} distinct choices, each a short sentence of at "
        f"most {MAX_CHOICE_TEXT} characters, and a text of at most {MAX_BEAT_TEXT} "
        'characters. When the story ends, answer {"text": "<the ending>", "choices": [], '
        f'"ending": true}}. The story has at most {max_beats} beats.'
    )
    opening = "Begin the story." + (f" Premise: {premise}" if premise else "")
    # The reader's choice on each beat: stored on the beat after it, `chosen` for the last.
    made = [beats[i].choices[_from_choice(beats[i + 1])] for i in range(len(beats) - 1)]
    messages = [Message("user", opening)]
    for beat, choice in zip(beats, [*made, chosen] if beats else [], strict=True):
        reply = {"text": beat.text, "choices": list(beat.choices), "ending": beat.ending}
        messages.append(Message("assistant", json.dumps(reply, ensure_ascii=False)))
        messages.append(Message("user", f"The reader chooses: {choice}"))
    index = len(beats)
    if index == max_beats - 1:
        instruction = f"Beat {index + 1} is the last: end the story (ending true, no choices)."
    else:
        instruction = f"Write beat {index + 1} of at most {max_beats}."
    last = messages[-1]
    messages[-1] = Message("user", f"{last.text}\n{instruction}")
    return GenerationRequest(system=system, messages=tuple(messages))


def _from_choice(beat: Beat) -> int:
    if beat.from_choice is None:
        raise ValueError(f"beat {beat.index} has no from_choice")
    return beat.from_choice


def parse_beat(text: str, *, opening: bool, final: bool) -> Draft:
    """Parse a model's reply strictly; raise `MalformedReply` for anything else.

    The reply must be one JSON object (a Markdown code fence around it is tolerated)
    matching `BEAT_REPLY_SCHEMA`: an ending (`"ending": true`) has no choices, any
    other beat has 2 to 4 distinct ones, and the opening beat is never an ending. The
    story ends at its last beat whatever the model says: a well-formed beat written
    there becomes the ending, its choices dropped.
    """
    body = _unfence(text.strip())
    try:
        value = json.loads(body)
        validate(value, BEAT_REPLY_SCHEMA, "reply")
    except json.JSONDecodeError as error:
        raise MalformedReply(f"the reply is not JSON: {error}") from error
    except BadRequest as error:
        raise MalformedReply(error.message) from error
    draft = Draft(
        text=value["text"], choices=tuple(value["choices"]), ending=value.get("ending", False)
    )
    problem = None
    if draft.ending and draft.choices:
        problem = "an ending has no choices"
    elif not draft.ending and not MIN_CHOICES <= len(draft.choices) <= MAX_CHOICES:
        problem = f"a beat that is not an ending has {MIN_CHOICES} to {MAX_CHOICES} choices"
    elif len({choice.strip().casefold() for choice in draft.choices}) != len(draft.choices):
        problem = "the choices are not distinct"
    elif opening and draft.ending:
        problem = "the opening beat cannot end the story"
    if problem is not None:
        raise MalformedReply(problem)
    if final:
        return Draft(text=draft.text, choices=(), ending=True)
    return draft


def _unfence(text: str) -> str:
    if not (text.startswith("```") and text.endswith("```")) or len(text) < 6:
        return text
    inner = text[3:-3]
    first_line, _, rest = inner.partition("\n")
    return rest if first_line.strip() in {"", "json"} else text


def beat_json(beat: Beat, chosen: int | None = None) -> dict[str, object]:
    """The public JSON of a beat (`chosen`: the reader's choice on it, when made)."""
    view: dict[str, object] = {
        "index": beat.index,
        "text": beat.text,
        "choices": list(beat.choices),
        "ending": beat.ending,
    }
    if chosen is not None:
        view["chosen"] = chosen
    return view


def session_json(session: Session) -> dict[str, object]:
    """The public JSON of a session with all its beats."""
    view: dict[str, object] = {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "genre": session.genre,
        "max_beats": session.max_beats,
        "status": session.status,
        "created_at": _iso(session.created_at_ms),
        "expires_at": _iso(session.expires_at * 1000),
        "beats": [beat_json(beat, session.chosen(beat.index)) for beat in session.beats],
    }
    if session.premise is not None:
        view["premise"] = session.premise
    return view


def _iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
