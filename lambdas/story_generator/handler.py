"""The Lambda entry point: API Gateway proxy events go to the API, EventBridge events
to `events.handle_event`; nothing else happens here.

The configuration, the AWS clients, the router, the reader budget and the API are
built once and kept for the life of the container (`_container`, the one
per-container cache of this module): in Lambda's init phase, elsewhere on the first
invocation.

Tracing is Lambda's active tracing (the StoryGenerator component turns it on): X-Ray
records each invocation's Initialization, Invocation and Overhead segments, and
botocore forwards the trace header to the AWS services it calls. The X-Ray SDK is
not used: importing it and patching libraries lengthened every cold start by
tens of milliseconds (bench/coldstart.py). What that costs is the SDK-call
subsegments (one per DynamoDB, EventBridge and Bedrock call, and per HTTP call to
OpenAI or Anthropic) and Powertools' `ColdStart` and `Service` annotations; the
`ResponseTime` metric still times every provider attempt.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from .api import RestApi, create_app
from .budget import ReaderBudget, build_reader_budget
from .clients import aws_client
from .events import EventBridgePublisher, NoEvents, handle_event
from .router import build_router
from .sessions import DynamoDBSessionStore, MemorySessionStore, SessionStore
from .settings import Settings, load_settings
from .story import LEASE_MARGIN_S, BeatGenerator, BeatListener, StoryService

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


class StoryHandler:
    """The story service and its API, built once per container from `Settings`."""

    def __init__(self, service: StoryService, app: RestApi) -> None:
        self.service = service
        self.app = app

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        """Dispatch one Lambda event."""
        if "httpMethod" in event:
            return self.app.resolve(event, context)
        if "detail-type" in event:
            return handle_event(self.service, event)
        logger.warning("Ignoring an event that is neither API Gateway nor EventBridge")
        return {"status": "ignored"}


def build_handler(
    settings: Settings,
    *,
    generator: BeatGenerator | None = None,
    listener: BeatListener | None = None,
    budget: ReaderBudget | None = None,
) -> StoryHandler:
    """Wire the story generator from `settings` (tests may replace the router, listener
    or budget).

    Without SESSION_TABLE_NAME the sessions, circuits and reader budgets are kept in
    memory (local runs); events are published only when EVENTS_ENABLED; readers'
    generations are counted only with READER_BUDGET.
    """
    router = build_router(settings)
    table = settings.session_table_name
    # Bounded so that a slow AWS call cannot eat the 29 s API Gateway gives a
    # request (botocore's legacy mode retries DynamoDB up to 10 times); publishing
    # is best effort.
    store: SessionStore = (
        DynamoDBSessionStore(
            aws_client("dynamodb", connect_timeout_s=2, read_timeout_s=5, attempts=4), table
        )
        if table
        else MemorySessionStore()
    )
    if listener is None:
        listener = (
            EventBridgePublisher(
                aws_client("events", connect_timeout_s=1, read_timeout_s=2, attempts=3),
                settings.event_bus_name,
            )
            if settings.events_enabled
            else NoEvents()
        )
    service = StoryService(
        store,
        generator or router,
        listener,
        settings.session_ttl_days,
        budget=budget or build_reader_budget(settings),
        # A duplicate waits for the first request for as long as it can be generating.
        lease_s=settings.router.deadline_s + LEASE_MARGIN_S,
    )
    app = create_app(service, router, settings.environment, settings.cors_allowed_origins)
    return StoryHandler(service, app)


@functools.cache
def _container() -> StoryHandler:
    """The per-container story generator, built from the environment on first use."""
    return build_handler(load_settings(os.environ))


# In Lambda the container is built while this module is imported, in the init
# phase: provisioned concurrency then does it before any request arrives. Tests and
# `make dev` build theirs on first use, after setting the environment.
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    _container()


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda handler (`story_generator.handler.lambda_handler`)."""
    return _container()(event, context)
