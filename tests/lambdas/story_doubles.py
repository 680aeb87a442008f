"""Test doubles of the story's collaborators, and a way to call the handler like API Gateway."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from lambdas.devserver import LocalContext, proxy_event
from lambdas.story_generator.generation import Generation, GenerationRequest
from lambdas.story_generator.sessions import Beat, Session

T = TypeVar("T")


def beat_reply(text: str = "You wake on the last train.", choices: int = 3) -> str:
    """A well-formed model reply with `choices` options (0: an ending)."""
    options = [f"Option {number}" for number in range(1, choices + 1)]
    return json.dumps({"text": text, "choices": options, "ending": choices == 0})


class FakeRouter:
    """Answers every generation with `reply(request)` through the caller's `accept`.

    `fail` is raised instead when set; `requests` records every prompt; `before_reply`
    runs first (tests use it to hold concurrent callers at a barrier).
    """

    def __init__(self, reply: Callable[[GenerationRequest], str] | None = None) -> None:
        self.reply = reply or (lambda request: beat_reply(f"Beat after {len(request.messages)}."))
        self.fail: Exception | None = None
        self.before_reply: Callable[[], None] | None = None
        self.requests: list[GenerationRequest] = []
        self._lock = threading.Lock()

    def generate(
        self, request: GenerationRequest, accept: Callable[[str], T]
    ) -> tuple[T, Generation]:
        """Like `Router.generate`, with one provider named `fake`."""
        with self._lock:
            self.requests.append(request)
        if self.before_reply is not None:
            self.before_reply()
        if self.fail is not None:
            raise self.fail
        text = self.reply(request)
        return accept(text), Generation(
            text=text,
            provider="fake",
            model="fake-model",
            input_tokens=10,
            output_tokens=20,
            latency_ms=1.0,
            cost_usd=0.0,
            fallback=False,
        )


class Gate:
    """Holds every generation of a `FakeRouter` (as its `before_reply`) until opened.

    `entered` is set once a generation is being held: concurrent requests can then be
    sent while it is in progress, without sleeping.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        if not self._open.wait(timeout=30):
            raise TimeoutError("the gate was never opened")

    def open(self) -> None:
        """Let the held generations (and every later one) go on."""
        self._open.set()


class RecordingBudget:
    """A reader budget that records every charge; raises `refuse` instead when set."""

    def __init__(self) -> None:
        self.charged: list[str] = []
        self.refuse: Exception | None = None
        self._lock = threading.Lock()

    def charge(self, reader_id: str) -> None:
        """Record one generation for `reader_id`."""
        if self.refuse is not None:
            raise self.refuse
        with self._lock:
            self.charged.append(reader_id)


class RecordingListener:
    """Keeps every session it is told about (the beat just written is `session.current`)."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []

    def beat_written(self, session: Session) -> None:
        """Record `session`."""
        self.sessions.append(session)


@dataclass(frozen=True)
class Reply:
    """A handler's API Gateway result, decoded."""

    status: int
    headers: dict[str, str]
    body: Any


# A user pool for the API definition's Cognito authorizer.
USER_POOL_ARN = "arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_readers"
# The `sub` of the reader `invoke` sends by default (Cognito subs are UUIDs).
READER = "7f0c8a52-3d4e-4b6f-9a1b-2c3d4e5f6a7b"
READER_CLAIMS: Mapping[str, str] = {"sub": READER, "token_use": "id"}


def invoke(
    handler: Callable[[Mapping[str, Any], Any], Mapping[str, Any]],
    method: str,
    path: str,
    body: object = None,
    headers: Mapping[str, str] | None = None,
    *,
    claims: Mapping[str, str] | None = READER_CLAIMS,
) -> Reply:
    """Send one API Gateway REST proxy event (a JSON body unless `body` is str or bytes).

    `path` may carry a query string. `claims` are those API Gateway's Cognito authorizer
    would pass (`requestContext.authorizer.claims`); None: no authorizer, as on an open
    route.
    """
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    event = proxy_event(method, path, (headers or {}).items(), data)
    if claims is not None:
        event["requestContext"]["authorizer"] = {"claims": dict(claims)}
    result = handler(event, LocalContext())
    merged = {name: str(value) for name, value in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        merged[name] = ", ".join(str(value) for value in values)
    return Reply(
        result["statusCode"], merged, json.loads(result["body"]) if result["body"] else None
    )


NOW = 1_800_000_000.0


def clock() -> float:
    """A clock stopped at `NOW`."""
    return NOW


def make_beat(index: int, from_choice: int | None = None, ending: bool = False) -> Beat:
    """A stored beat (an ending has no choices)."""
    return Beat(
        index=index,
        text=f"Beat {index}",
        choices=() if ending else ("Left", "Right"),
        ending=ending,
        from_choice=from_choice,
        created_at_ms=int(NOW * 1000) + index,
        provider="fake",
        model="fake-model",
    )


def make_session(session_id: str | None = None, expires_at: int = int(NOW) + 86_400) -> Session:
    """A stored session with its opening beat."""
    return Session(
        session_id=session_id or str(uuid.uuid4()),
        user_id=READER,
        genre="liminal",
        premise="A train that never arrives",
        max_beats=5,
        created_at_ms=int(NOW * 1000),
        expires_at=expires_at,
        beats=(make_beat(0),),
    )
