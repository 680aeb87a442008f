"""How many generations one reader may cause: a budget per minute and per day.

Every generation a reader asks for (a story started, a choice made) is charged
to that reader before any provider is called; a reader over either limit gets a
429 `generation_budget_exceeded` (`errors.GenerationBudgetExceeded`) with a
`Retry-After` of the seconds until that window ends. So no single reader, however
fast or however many clients it runs, can spend the providers' quota, or the
budget, that every reader shares. Windows are fixed, aligned on the epoch (UTC
minutes and days): a reader may get up to twice a limit across a window boundary,
never more. The minute is charged first, and a request it refuses is not charged
to the day, so that a client retrying too fast does not spend its day's budget;
a day's budget spent stays spent even though that minute's request was refused.

Implementations:
- `DynamoDBReaderBudget`: counters in the session table, shared by every container
  of the function: one atomic `UpdateItem` ADD per window per charge, on the items
  `session_id = "budget#<reader>#m<epoch minute>"` and `"budget#<reader>#d<epoch
  day>"` (`timestamp = 0`), with an `expires_at` TTL `_EXPIRY_MARGIN_S` after the
  window ends. A new window is a new item, so counters never need resetting.
- `MemoryReaderBudget`: the same counts in this process (local runs, tests).
- `NoBudget`: counts nothing (READER_BUDGET unset).

When DynamoDB fails (down, throttled, a missing permission), the budget fails
open: a warning is logged and, for `_DEGRADED_S`, the charges are counted by this
container alone, with the same limits, instead of waiting on the table again. A
budget is a guard against abuse, not a record anyone depends on: failing closed
would turn a DynamoDB blip into a 429 for every reader, while failing open bounds
a reader by what each container still counts, then by the stage's throttle and
the function's reserved concurrency.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aws_lambda_powertools import Logger

from .clients import Lazy, aws_client
from .errors import GenerationBudgetExceeded
from .settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(child=True)

KEY_PREFIX = "budget#"
# How long a counter item outlives its window: not needed after it, kept a little
# so that a clock slightly behind another container's still finds it.
_EXPIRY_MARGIN_S = 300
# After a store failure, how long charges are counted in this container only.
_DEGRADED_S = 5.0


class ReaderBudget(Protocol):
    """Counts each reader's generations against its limits."""

    def charge(self, reader_id: str) -> None:
        """Count one generation for `reader_id`.

        Raises `errors.GenerationBudgetExceeded` when that makes the reader exceed
        its per-minute or per-day limit (the generation must then not happen).
        """
        ...


@dataclass(frozen=True, slots=True)
class _Window:
    """A fixed window of `seconds`, aligned on the epoch, allowing `limit` generations."""

    name: str
    letter: str  # in the counter's key
    seconds: int
    limit: int

    def index(self, now: float) -> int:
        """The number of the window `now` falls in (epoch minutes or days)."""
        return int(now // self.seconds)

    def ends_at(self, now: float) -> int:
        """When the window `now` falls in ends (epoch seconds)."""
        return (self.index(now) + 1) * self.seconds

    def exceeded(self, now: float) -> GenerationBudgetExceeded:
        """The refusal of a generation over this window's limit at `now`."""
        wait_s = self.ends_at(now) - now
        return GenerationBudgetExceeded(
            wait_s,
            f"You have asked for {self.limit} beats this {self.name}, the most one reader "
            f"may; retry in {max(1, math.ceil(wait_s))} s.",
            details={"limit": self.limit, "window": self.name},
        )


def _windows(per_minute: int, per_day: int) -> tuple[_Window, _Window]:
    for name, limit in (("per_minute", per_minute), ("per_day", per_day)):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{name} must be a positive integer, not {limit!r}")
    return _Window("minute", "m", 60, per_minute), _Window("day", "d", 86_400, per_day)


def _require_reader(reader_id: str) -> None:
    if not reader_id:
        raise ValueError("a generation is charged to a reader: reader_id is empty")


class NoBudget:
    """No limit: every charge is accepted and nothing is counted."""

    def charge(self, reader_id: str) -> None:
        """Accept the generation."""


class MemoryReaderBudget:
    """The budget counted in this process only (thread-safe); only current windows are kept."""

    def __init__(
        self, per_minute: int, per_day: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._windows = _windows(per_minute, per_day)
        self._clock = clock
        self._lock = threading.Lock()
        # Per window name: the current window's index and each reader's count in it.
        self._counts: dict[str, tuple[int, Counter[str]]] = {}

    def charge(self, reader_id: str) -> None:
        """Count one generation for `reader_id`, or raise `GenerationBudgetExceeded`."""
        _require_reader(reader_id)
        now = self._clock()
        with self._lock:
            for window in self._windows:
                index = window.index(now)
                current, counts = self._counts.get(window.name, (index, Counter()))
                if current != index:  # a new window: the previous one's counts are over
                    counts = Counter()
                self._counts[window.name] = (index, counts)
                counts[reader_id] += 1
                if counts[reader_id] > window.limit:
                    raise window.exceeded(now)


class DynamoDBReaderBudget:
    """The budget counted in the session table, shared by every container (thread-safe)."""

    def __init__(
        self,
        table_name: str,
        per_minute: int,
        per_day: int,
        *,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table_name
        self._windows = _windows(per_minute, per_day)
        self._clock = clock
        # Short, with one retry: on the path of every generation, and it fails open.
        self._client: Lazy[DynamoDBClient] = Lazy(
            lambda: (
                client
                or aws_client("dynamodb", connect_timeout_s=0.5, read_timeout_s=1.0, attempts=2)
            )
        )
        self._fallback = MemoryReaderBudget(per_minute, per_day, clock=clock)
        self._degraded_until = float("-inf")

    @staticmethod
    def key(reader_id: str, window: str, index: int) -> str:
        """The `session_id` of a reader's counter: `budget#<reader>#<m|d><window index>`."""
        return f"{KEY_PREFIX}{reader_id}#{window}{index}"

    def charge(self, reader_id: str) -> None:
        """Count one generation for `reader_id`, or raise `GenerationBudgetExceeded`."""
        _require_reader(reader_id)
        now = self._clock()
        if now < self._degraded_until:
            self._fallback.charge(reader_id)
            return
        for window in self._windows:
            try:
                count = self._add(reader_id, window, now)
            # Any failure of the table (down, throttled, denied) fails open: see the
            # module's docstring.
            except Exception as error:
                logger.warning(
                    "reader budget store failed; counting in this container only",
                    extra={"error": f"{type(error).__name__}: {error}"},
                )
                self._degraded_until = now + _DEGRADED_S
                self._fallback.charge(reader_id)
                return
            if count > window.limit:
                raise window.exceeded(now)

    def _add(self, reader_id: str, window: _Window, now: float) -> int:
        """One more generation on the reader's counter of `window`; the count after it."""
        reply = self._client.get().update_item(
            TableName=self._table,
            Key={
                "session_id": {"S": self.key(reader_id, window.letter, window.index(now))},
                "timestamp": {"N": "0"},
            },
            UpdateExpression="ADD generations :one SET expires_at = :expires_at",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":expires_at": {"N": str(window.ends_at(now) + _EXPIRY_MARGIN_S)},
            },
            ReturnValues="UPDATED_NEW",
        )
        return int(reply["Attributes"]["generations"]["N"])


def build_reader_budget(settings: Settings) -> ReaderBudget:
    """The budget of `settings`, once per container: none without READER_BUDGET, else
    in the session table when there is one, in memory otherwise (local runs)."""
    limits = settings.reader_budget
    if limits is None:
        return NoBudget()
    table = settings.session_table_name
    if table:
        return DynamoDBReaderBudget(table, limits.per_minute, limits.per_day)
    return MemoryReaderBudget(limits.per_minute, limits.per_day)
