"""The story: starting a session, making a choice, reading a session back, listing a
reader's stories.

Every session belongs to the reader who started it (the verified `sub` of their
token, never a field of the body): another reader's session is answered exactly as
an unknown one, so session ids cannot be probed. Session ids are random (uuid4).

Each beat is written by the AI router from a prompt that holds the whole story so
far; the model answers in JSON (`{"text", "choices", "ending"}`) and the reply is
parsed strictly, so an unusable reply counts as that provider's failure and the
router falls back to the next one. Nothing is stored before a beat has been
generated, so a failed generation leaves the session as it was, and every request
can be retried: a retried start (same reader and Idempotency-Key) or choice (same
beat and choice) is answered from what was stored, without a new generation.

Concurrent duplicates pay for one generation: before generating, a keyed start
claims its idempotency record and a choice takes a lease on the session's current
beat, each with one conditional write, for at most `lease_s` (the router's deadline
and a margin for the writes). A duplicate that arrives meanwhile gets the stored
answer once there is one, else a 409 `request_in_progress` with Retry-After; a
failed generation gives the claim or the lease back. The reader's budget is charged
right before each generation, never for an answer read from storage.

A story is completed when the model ends it (`ending: true`, no choices) or when it
reaches its `max_beats`: the prompt then asks for the ending, and the beat written
there ends the story whatever the model answered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools import Logger

from .budget import NoBudget, ReaderBudget
from .errors import BadRequest, Conflict, NotFound
from .generation import Generation, GenerationRequest, MalformedReply, Message
from .sessions import (
    IDEMPOTENCY_PREFIX,
    Beat,
    ChoicePending,
    ClaimLost,
    IdempotencyRecord,
    PendingChoice,
    Session,
    SessionStore,
    StaleSession,
    StoryKey,
    StorySummary,
    is_session_id,
)
from .validation import validate

logger = Logger(child=True)

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

# A reader id: the `sub` claim of a Cognito token (a UUID), or an EventBridge
# producer's `reader_id`. Never `#` or NUL, so it cannot collide with other item keys.
READER_ID_SCHEMA: Mapping[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._@:+-]*$",
}
START_STORY_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "genre": {"type": "string", "enum": list(GENRES)},
        "premise": {"type": "string", "minLength": 1, "maxLength": 1000},
        "max_beats": {"type": "integer", "minimum": MIN_BEATS, "maximum": MAX_BEATS},
    },
    "required": ["genre"],
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

MIN_PAGE, DEFAULT_PAGE, MAX_PAGE = 1, 20, 50
LIST_LIMIT_SCHEMA: Mapping[str, Any] = {"type": "integer", "minimum": MIN_PAGE, "maximum": MAX_PAGE}
# Unpadded base64url (encode_cursor); its content is checked by decode_cursor.
CURSOR_SCHEMA: Mapping[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 1024,
    "pattern": "^[A-Za-z0-9_-]+$",
}
_CURSOR_FIELDS = {"user_id", "timestamp", "session_id"}

# A lost race on a write is retried this many times before the caller gets a 409
# (only a DynamoDB transaction conflict, where nobody committed, needs more than one).
_WRITE_ATTEMPTS = 3
# Beyond the router's deadline, the lease covers the budget charge and the writes.
LEASE_MARGIN_S = 5.0
# With the router's default deadline (the handler passes the configured one).
DEFAULT_LEASE_S = 25.0 + LEASE_MARGIN_S
# What a duplicate of a request in progress is told to wait: a beat takes seconds.
IN_PROGRESS_RETRY_S = 3

T = TypeVar("T")


@dataclass(frozen=True)
class StartStory:
    """A validated request to start a story (the reader comes from their token)."""

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
        """A digest of the body, to tell an idempotent retry from a reused key."""
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
    """Starts stories, records choices, reads sessions back and lists a reader's stories.

    `reader` is the verified reader id of the caller. Where it may be None (a choice
    or a read for an EventBridge producer, which acts for the session's reader), None
    skips the ownership check; the API always passes the token's `sub`.
    """

    def __init__(
        self,
        store: SessionStore,
        generator: BeatGenerator,
        listener: BeatListener,
        ttl_days: int,
        *,
        budget: ReaderBudget | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._generator = generator
        self._listener = listener
        self._budget = budget or NoBudget()
        self._ttl_s = ttl_days * 86_400
        self._lease_ms = int(lease_s * 1000)
        self._clock = clock

    def start(
        self, reader: str, request: StartStory, idempotency_key: str | None = None
    ) -> Session:
        """Start a session for `reader` and write its opening beat.

        With an `idempotency_key`, a retry of the same body by the same reader gets the
        session the first attempt stored, unchanged; the same key with another body is
        a 409 `idempotency_key_reused`, and while the first attempt is still writing, a
        409 `request_in_progress`. Keys are the reader's own: two readers' equal keys
        start two sessions.
        """
        if idempotency_key is None:
            session_id = str(uuid.uuid4())
            session = self._new_session(reader, session_id, request, self._expires_at())
            self._store.create(session)
            self._listener.beat_written(session)
            return session
        key_id = idempotency_key_id(reader, idempotency_key)
        fingerprint = request.fingerprint()
        for _ in range(_WRITE_ATTEMPTS):
            now_ms = self._now_ms()
            claim = IdempotencyRecord(
                key_id=key_id,
                session_id=str(uuid.uuid4()),
                fingerprint=fingerprint,
                state="in_progress",
                until_ms=now_ms + self._lease_ms,
                expires_at=self._expires_at(),
            )
            try:
                stored = self._store.claim(claim, now_ms)
            except ClaimLost:
                continue
            if stored is not None:
                return self._replay(stored, fingerprint)
            return self._start_claimed(reader, request, claim)
        raise _concurrent_update()

    def _start_claimed(self, reader: str, request: StartStory, claim: IdempotencyRecord) -> Session:
        try:
            session = self._new_session(reader, claim.session_id, request, claim.expires_at)
        except BaseException:
            _quietly(self._store.release_claim, claim)
            raise
        for _ in range(_WRITE_ATTEMPTS):
            try:
                self._store.create(session, claim)
            except ClaimLost:
                stored = self._store.record(claim.key_id)
                if stored == claim:  # a transaction conflict: nobody else committed
                    continue
                if stored is None or not stored.live(self._now_ms()):
                    raise _concurrent_update() from None
                return self._replay(stored, claim.fingerprint)
            self._listener.beat_written(session)
            return session
        _quietly(self._store.release_claim, claim)
        raise _concurrent_update()

    def _replay(self, stored: IdempotencyRecord, fingerprint: str) -> Session:
        """The answer to a start whose key already has the live record `stored`."""
        if stored.fingerprint != fingerprint:
            raise Conflict(
                "This Idempotency-Key was already used to start a different story; "
                "use a new key for a new story.",
                code="idempotency_key_reused",
            )
        if stored.state == "in_progress":
            raise Conflict(
                "The story of this Idempotency-Key is still being written; retry the same "
                "request after Retry-After seconds to get it.",
                code="request_in_progress",
                retry_after_s=IN_PROGRESS_RETRY_S,
            )
        session = self._store.get(stored.session_id)
        if session is None:
            # The record and its session expire together; one without the other is a bug.
            raise RuntimeError(f"idempotency record {stored.key_id} names no readable session")
        return session

    def _new_session(
        self, reader: str, session_id: str, request: StartStory, expires_at: int
    ) -> Session:
        draft, generation = self._generate(
            reader, request.genre, request.premise, request.max_beats, ()
        )
        now_ms = self._now_ms()
        return Session(
            session_id=session_id,
            user_id=reader,
            genre=request.genre,
            premise=request.premise,
            max_beats=request.max_beats,
            created_at_ms=now_ms,
            expires_at=expires_at,
            beats=(_beat(0, draft, None, now_ms, generation),),
        )

    def choose(self, session_id: str, request: ChoiceRequest, *, reader: str | None) -> Beat:
        """Record the reader's choice and return the beat it leads to.

        The same choice again returns the stored beat; while it is being written, a
        409 `request_in_progress`. A failed generation leaves the session as it was.
        """
        session = self.get(session_id, reader=reader)
        pending = None
        for _ in range(_WRITE_ATTEMPTS):
            stored = _answered(session, request)
            if stored is not None:
                return stored
            now_ms = self._now_ms()
            pending = PendingChoice(request.choice, uuid.uuid4().hex, now_ms + self._lease_ms)
            try:
                self._store.reserve(session, pending, now_ms)
                break
            except StaleSession:
                session = self.get(session_id, reader=reader)
            except ChoicePending as busy:
                raise _choice_in_progress(session, busy.pending, request) from None
        else:
            raise _concurrent_update()
        assert pending is not None  # the loop breaks only once reserved
        try:
            chosen = session.current.choices[request.choice]
            draft, generation = self._generate(
                session.user_id,
                session.genre,
                session.premise,
                session.max_beats,
                session.beats,
                chosen,
            )
        except BaseException:
            _quietly(self._store.release, session, pending)
            raise
        beat = _beat(len(session.beats), draft, request.choice, self._now_ms(), generation)
        for _ in range(_WRITE_ATTEMPTS):
            try:
                self._store.append(session, beat, pending)
            except StaleSession:
                stored = _answered(self.get(session_id, reader=reader), request)
                if stored is not None:
                    return stored
                continue
            self._listener.beat_written(session.with_beat(beat))
            return beat
        _quietly(self._store.release, session, pending)
        raise _concurrent_update()

    def get(self, session_id: str, *, reader: str | None) -> Session:
        """The session, or `NotFound` when it does not exist, has expired or is not `reader`'s.

        The three answers are the same, so that nobody can tell another reader's
        session from one that does not exist.
        """
        session = self._store.get(session_id)
        if session is None or (reader is not None and session.user_id != reader):
            raise NotFound(
                f"No story session {session_id}: it never existed or has expired; "
                "start a new story with POST /stories.",
                code="session_not_found",
            )
        return session

    def stories(
        self, reader: str, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> tuple[tuple[StorySummary, ...], str | None]:
        """A page of `reader`'s stories, newest first, and the cursor of the next page."""
        after = None if cursor is None else decode_cursor(cursor, reader)
        page = self._store.stories(reader, limit, after)
        return page.stories, None if page.next is None else encode_cursor(reader, page.next)

    def _generate(
        self,
        reader: str,
        genre: str,
        premise: str | None,
        max_beats: int,
        beats: Sequence[Beat],
        chosen: str | None = None,
    ) -> tuple[Draft, Generation]:
        self._budget.charge(reader)
        index = len(beats)
        final = index == max_beats - 1
        request = build_request(genre, premise, max_beats, beats, chosen)
        return self._generator.generate(
            request, lambda text: parse_beat(text, opening=index == 0, final=final)
        )

    def _expires_at(self) -> int:
        return self._now_ms() // 1000 + self._ttl_s

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def idempotency_key_id(reader: str, key: str) -> str:
    """The item key of the idempotency record of `reader`'s `key` (never a session id)."""
    digest = hashlib.sha256(f"{reader}\0{key}".encode()).hexdigest()
    return IDEMPOTENCY_PREFIX + digest


def encode_cursor(reader: str, key: StoryKey) -> str:
    """The opaque cursor of a listing page that starts after `key`: base64url of the
    index's LastEvaluatedKey, in plain JSON."""
    value = {"user_id": reader, "timestamp": key.timestamp, "session_id": key.session_id}
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, reader: str) -> StoryKey:
    """The key a cursor of `reader`'s listing resumes after; 400 `invalid_cursor` otherwise."""
    value: object = None
    try:
        validate(cursor, CURSOR_SCHEMA, "cursor")
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (BadRequest, binascii.Error, ValueError):
        value = None
    if (
        not isinstance(value, dict)
        or set(value) != _CURSOR_FIELDS
        or value["user_id"] != reader
        or not isinstance(value["session_id"], str)
        or not is_session_id(value["session_id"])
        or isinstance(value["timestamp"], bool)
        or not isinstance(value["timestamp"], int)
        or value["timestamp"] < 1
    ):
        raise BadRequest(
            "`cursor` is not a cursor of your stories: pass the `next_cursor` of the previous "
            "page unchanged, or leave it out for the first page.",
            code="invalid_cursor",
            details={"field": "cursor"},
        )
    return StoryKey(value["timestamp"], value["session_id"])


def _choice_in_progress(
    session: Session, pending: PendingChoice, request: ChoiceRequest
) -> Conflict:
    beat = session.current.index
    if pending.choice == request.choice:
        message = (
            f"Choice {request.choice} on beat {beat} is still being written; retry the same "
            "request after Retry-After seconds to get its beat."
        )
    else:
        message = (
            f"Choice {pending.choice} on beat {beat} is being written; read the session "
            "again after Retry-After seconds."
        )
    return Conflict(message, code="request_in_progress", retry_after_s=IN_PROGRESS_RETRY_S)


def _concurrent_update() -> Conflict:
    return Conflict(
        "Other requests kept changing this session; read it again and retry.",
        code="concurrent_update",
    )


def _quietly(release: Callable[..., None], *args: Any) -> None:
    """Give back a claim or lease; a failure only delays a retry until the lease ends."""
    try:
        release(*args)
    except Exception:
        logger.exception("Releasing a claim or lease failed; it ends with its lease")


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


def summary_json(summary: StorySummary) -> dict[str, object]:
    """The public JSON of one entry of a reader's listing."""
    view: dict[str, object] = {
        "session_id": summary.session_id,
        "genre": summary.genre,
        "status": summary.status,
        "created_at": _iso(summary.created_at_ms),
        "expires_at": _iso(summary.expires_at * 1000),
    }
    if summary.premise is not None:
        view["premise"] = summary.premise
    return view


def _iso(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
