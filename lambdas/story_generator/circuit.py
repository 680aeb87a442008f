"""A circuit breaker per provider, its state shared by every warm container.

A provider's circuit opens after `circuit_failure_threshold` consecutive
failures (at once, for `misconfigured_cooldown_s`, after a misconfiguration);
while open the router skips the provider. Only the provider's own failures count
(`COUNTED`: unhealthy or misconfigured, see `providers.base.FailureCategory`): a
circuit is shared by every reader, so no failure that a request can provoke, nor
a bug of our client, may move it. Once the cool-down is over the circuit
is half-open: exactly one call, across all containers, probes the provider; its
success closes the circuit, its failure opens it again, and a probe that tells
nothing (the request's own failure) is given back for the next call to take.

The state lives in a `CircuitStore`: the session table for the Lambda (items
`session_id = "circuit#<name>"`, `timestamp = 0`, with an `expires_at` TTL), or
memory for local runs and tests. Each container keeps its own view of every
circuit, read from the store every `circuit_cache_s`.

Recording an outcome never waits for the store. A failure counts in this
container's view at once (the circuit opens there at the threshold, or at once
when misconfigured) and the store hears of it from a `BackgroundWriter`: one
daemon thread per container that applies the writes in order. The store counts
failures with an atomic ADD, so every container's failures add up, and the
writer opens the circuit in the store when the count the ADD returns reaches the
threshold; that count (every container's) then becomes this container's view,
unless more writes of the same provider are queued behind it. A success resets
the count the same way, and only when this container's view is not clean, so
that a healthy provider costs no write per request; within `circuit_cache_s` a
success elsewhere may therefore not reset a count this container has not seen.

`flush` waits, boundedly, for the queued writes: the router calls it at the end
of every generation, so that a container frozen between invocations holds back
no write. At most `BackgroundWriter.capacity` writes wait at a time; one more is
dropped with a warning (this container's view still counts it, the other
containers never see it, as when the store is down) rather than let a hung
store pile up threads or memory.

On the request path the store sees only the cached reads (one BatchGetItem per
`circuit_cache_s`) and, while a circuit is half-open, `claim_probe`: a
conditional write, so that exactly one call across containers probes, which
comes once per cool-down. It sees this container's own writes once they are
flushed: at the end of the generation that queued them, long before a cool-down
ends.

A store that fails never fails a generation: the breaker logs a warning and
carries on with this container's view alone for `max(circuit_cache_s, 1)` s
before it tries the store again (writes queued meanwhile are not sent).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeVar

from aws_lambda_powertools import Logger

from .clients import Lazy, aws_client
from .providers.base import FailureCategory, FailureKind
from .settings import RouterSettings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

logger = Logger(child=True)
T = TypeVar("T")

# How long a circuit item outlives its last write: long enough to keep counting
# consecutive failures, short enough that the table does not collect stale items.
_RECORD_TTL_S = 86_400.0
# The failure categories that count towards a circuit: the provider's side only.
COUNTED = frozenset({FailureCategory.UNHEALTHY, FailureCategory.MISCONFIGURED})


class CircuitState(StrEnum):
    """A provider's circuit as reported by `GET /health`."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitRecord:
    """What the store keeps per provider (times are epoch seconds, 0 when unset)."""

    failures: int = 0
    open_until: float = 0.0
    probe_until: float = 0.0
    last_failure: str | None = None

    def state(self, now: float) -> CircuitState:
        """Closed, open (cooling down) or half-open (a probe may be sent) at `now`."""
        if not self.open_until:
            return CircuitState.CLOSED
        return CircuitState.OPEN if now < self.open_until else CircuitState.HALF_OPEN


class CircuitStore(Protocol):
    """Where circuit records live; every method may raise when the store is down."""

    def load(self, names: Sequence[str]) -> dict[str, CircuitRecord]:
        """The records of `names` (a clean record for one never written)."""
        ...

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        """Count one more consecutive failure, end any probe; the updated record."""
        ...

    def open(self, name: str, until: float, expires_at: float) -> None:
        """Open the circuit until `until`."""
        ...

    def reset(self, name: str) -> None:
        """Close the circuit and forget its failures."""
        ...

    def claim_probe(self, name: str, now: float, until: float) -> bool:
        """Take the single half-open probe until `until`; False when it is not free."""
        ...

    def release_probe(self, name: str, until: float) -> None:
        """Free the probe taken until `until`, if it is still that one."""
        ...


class MemoryCircuitStore:
    """Circuit records in this process only (local runs and tests)."""

    def __init__(self, records: Mapping[str, CircuitRecord] | None = None) -> None:
        self._records = dict(records or {})
        self._lock = threading.Lock()

    def load(self, names: Sequence[str]) -> dict[str, CircuitRecord]:
        """The records of `names` (a clean record for one never written)."""
        with self._lock:
            return {name: self._records.get(name, CircuitRecord()) for name in names}

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        """Count one more consecutive failure, end any probe; the updated record."""
        with self._lock:
            record = self._records.get(name, CircuitRecord())
            record = replace(
                record, failures=record.failures + 1, probe_until=0.0, last_failure=failure
            )
            self._records[name] = record
            return record

    def open(self, name: str, until: float, expires_at: float) -> None:
        """Open the circuit until `until`."""
        with self._lock:
            self._records[name] = replace(
                self._records.get(name, CircuitRecord()), open_until=until
            )

    def reset(self, name: str) -> None:
        """Close the circuit and forget its failures."""
        with self._lock:
            self._records.pop(name, None)

    def claim_probe(self, name: str, now: float, until: float) -> bool:
        """Take the single half-open probe until `until`; False when it is not free."""
        with self._lock:
            record = self._records.get(name, CircuitRecord())
            if not record.open_until or record.open_until > now or record.probe_until > now:
                return False
            self._records[name] = replace(record, probe_until=until)
            return True

    def release_probe(self, name: str, until: float) -> None:
        """Free the probe taken until `until`, if it is still that one."""
        with self._lock:
            record = self._records.get(name)
            if record is not None and record.probe_until == until:
                self._records[name] = replace(record, probe_until=0.0)


class DynamoDBCircuitStore:
    """Circuit records as items of the session table, shared by all containers."""

    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        self._table = table_name
        # Short and without retries: the store is advisory, a generation never waits on it.
        self._client: Lazy[DynamoDBClient] = Lazy(
            lambda: (
                client
                or aws_client("dynamodb", connect_timeout_s=0.5, read_timeout_s=1.0, attempts=1)
            )
        )

    def _dynamodb(self) -> DynamoDBClient:
        return self._client.get()

    @staticmethod
    def _key(name: str) -> dict[str, AttributeValueTypeDef]:
        return {"session_id": {"S": f"circuit#{name}"}, "timestamp": {"N": "0"}}

    def load(self, names: Sequence[str]) -> dict[str, CircuitRecord]:
        """One BatchGetItem for every provider; keys left unprocessed are left out."""
        reply = self._dynamodb().batch_get_item(
            RequestItems={self._table: {"Keys": [self._key(name) for name in names]}}
        )
        records = {name: CircuitRecord() for name in names}
        for item in reply.get("Responses", {}).get(self._table, []):
            records[item["session_id"]["S"].removeprefix("circuit#")] = _record(item)
        unprocessed = reply.get("UnprocessedKeys", {}).get(self._table)
        for key in unprocessed["Keys"] if unprocessed else []:
            records.pop(str(key["session_id"].get("S", "")).removeprefix("circuit#"), None)
        return records

    def add_failure(self, name: str, failure: str, expires_at: float) -> CircuitRecord:
        """An atomic ADD, so failures seen by several containers at once all count."""
        reply = self._dynamodb().update_item(
            TableName=self._table,
            Key=self._key(name),
            UpdateExpression=(
                "ADD failures :one SET last_failure = :failure, probe_until = :zero, "
                "expires_at = :expires_at"
            ),
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":zero": {"N": "0"},
                ":failure": {"S": failure},
                ":expires_at": {"N": str(int(expires_at))},
            },
            ReturnValues="ALL_NEW",
        )
        return _record(reply.get("Attributes", {}))

    def open(self, name: str, until: float, expires_at: float) -> None:
        """Open the circuit until `until`."""
        self._dynamodb().update_item(
            TableName=self._table,
            Key=self._key(name),
            UpdateExpression="SET open_until = :until, expires_at = :expires_at",
            ExpressionAttributeValues={
                ":until": {"N": repr(until)},
                ":expires_at": {"N": str(int(expires_at))},
            },
        )

    def reset(self, name: str) -> None:
        """Close the circuit and forget its failures."""
        self._dynamodb().delete_item(TableName=self._table, Key=self._key(name))

    def claim_probe(self, name: str, now: float, until: float) -> bool:
        """A conditional write: only one container wins the probe."""
        client = self._dynamodb()
        try:
            client.update_item(
                TableName=self._table,
                Key=self._key(name),
                UpdateExpression="SET probe_until = :until",
                ConditionExpression=(
                    "open_until > :zero AND open_until <= :now AND "
                    "(attribute_not_exists(probe_until) OR probe_until <= :now)"
                ),
                ExpressionAttributeValues={
                    ":until": {"N": repr(until)},
                    ":now": {"N": repr(now)},
                    ":zero": {"N": "0"},
                },
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_probe(self, name: str, until: float) -> None:
        """A conditional write: only the probe claimed until `until` is freed."""
        client = self._dynamodb()
        # Failed, the condition means another probe, a failure or a reset came since.
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.update_item(
                TableName=self._table,
                Key=self._key(name),
                UpdateExpression="SET probe_until = :zero",
                ConditionExpression="probe_until = :until",
                ExpressionAttributeValues={":until": {"N": repr(until)}, ":zero": {"N": "0"}},
            )


def _record(item: Mapping[str, AttributeValueTypeDef]) -> CircuitRecord:
    def number(name: str) -> float:
        value = item.get(name, {}).get("N")
        return float(value) if isinstance(value, str) else 0.0

    failure = item.get("last_failure", {}).get("S")
    return CircuitRecord(
        failures=int(number("failures")),
        open_until=number("open_until"),
        probe_until=number("probe_until"),
        last_failure=failure if isinstance(failure, str) else None,
    )


class BackgroundWriter:
    """Runs circuit store writes in order on one daemon thread, off the request path.

    At most `capacity` writes wait (queued or running) at a time. The thread starts
    with the first write (a container whose providers never fail never starts it)
    and, being a daemon, never delays the interpreter's exit.
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._tasks: deque[Callable[[], None]] = deque()
        self._unfinished = 0  # queued or running
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, task: Callable[[], None]) -> bool:
        """Queue `task`; False, and nothing queued, when `capacity` writes already wait."""
        with self._changed:
            if self._unfinished >= self.capacity:
                return False
            self._tasks.append(task)
            self._unfinished += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="circuit-writer", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()
        return True

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every queued write; True when none is left."""
        with self._changed:
            return self._changed.wait_for(lambda: self._unfinished == 0, timeout_s)

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._tasks))
                task = self._tasks.popleft()
            try:
                task()
            # The tasks handle store failures themselves; this keeps a bug from
            # killing the thread and with it every later write.
            except Exception:
                logger.exception("circuit write raised")
            finally:
                with self._changed:
                    self._unfinished -= 1
                    self._changed.notify_all()


class CircuitBreaker:
    """The circuits of the configured providers, as this container sees them (thread-safe)."""

    def __init__(
        self,
        store: CircuitStore,
        names: Iterable[str],
        settings: RouterSettings,
        *,
        clock: Callable[[], float] = time.time,
        writer: BackgroundWriter | None = None,
    ) -> None:
        self._store = store
        self._names = tuple(names)
        self._settings = settings
        self._clock = clock
        self._writer = writer or BackgroundWriter()
        # This container's view of each circuit, and the writes of each still queued.
        self._records: dict[str, CircuitRecord] = {}
        self._pending: Counter[str] = Counter()
        # The half-open probes this container claimed (until when), the only ones it
        # may give back: its view also holds the probes that other containers claimed.
        self._probes: dict[str, float] = {}
        self._loaded_at = float("-inf")
        # While the store is failing, until when it is left alone.
        self._degraded_until = float("-inf")
        # Reentrant: a writer that runs its task at once (bench/router.py) re-enters.
        self._lock = threading.RLock()

    def allow(self, name: str) -> bool:
        """Whether the router may call `name` now (claims the probe when half-open)."""
        with self._lock:
            now = self._clock()
            record = self._record(name, now)
            state = record.state(now)
            if state is CircuitState.CLOSED:
                return True
            if state is CircuitState.OPEN or record.probe_until > now:
                return False
            # The one store write on the request path, once per cool-down: only a
            # conditional write lets exactly one call across containers probe.
            # A probe outlives the whole call only if its thread is abandoned.
            until = now + self._settings.deadline_s
            claimed = self._store_call(lambda store: store.claim_probe(name, now, until))
            if claimed is False:
                self._loaded_at = float("-inf")  # another container probes or closed it: re-read
                return False
            # Claimed, or the store is failing and this container's view (free) decides.
            self._records[name] = replace(record, probe_until=until)
            self._probes[name] = until
            logger.info("circuit half-open: probing provider", extra={"provider": name})
            return True

    def record_success(self, name: str) -> None:
        """Close the circuit of `name` (a store write only when it was not already clean)."""
        with self._lock:
            record = self._records.get(name, CircuitRecord())
            if record == CircuitRecord():
                return
            self._records[name] = CircuitRecord()
            if record.open_until:
                logger.info("circuit closed", extra={"provider": name})
            self._write(name, lambda: self._store_call(lambda store: store.reset(name)))

    def release_probe(self, name: str) -> None:
        """Give back the half-open probe of `name` that this container holds, if any.

        For a probe whose outcome says nothing of the provider (the request's own
        failure): the next call probes at once, rather than after the probe lapses.
        A probe this container only saw (another container's) is never given back.
        """
        with self._lock:
            record = self._records.get(name, CircuitRecord())
            until = self._probes.pop(name, None)
            if until is None or not record.open_until or until <= self._clock():
                return
            self._records[name] = replace(record, probe_until=0.0)
            self._write(
                name, lambda: self._store_call(lambda store: store.release_probe(name, until))
            )

    def record_failure(self, name: str, kind: FailureKind) -> None:
        """Count a failure of `name` here at once, and in the store in the background.

        A failure outside `COUNTED` (the request's, our client's, a skip) is ignored.
        """
        if kind.category not in COUNTED:
            return
        with self._lock:
            now = self._clock()
            record = self._records.get(name, CircuitRecord())
            record = replace(
                record, failures=record.failures + 1, probe_until=0.0, last_failure=kind.value
            )
            cooldown_s = self._cooldown_s(kind, record)
            if cooldown_s is not None:
                record = replace(record, open_until=now + cooldown_s)
                logger.warning(
                    "circuit opened",
                    extra={"provider": name, "failure": kind.value, "cooldown_s": cooldown_s},
                )
            self._records[name] = record
            opened = cooldown_s is not None
            self._write(name, lambda: self._store_failure(name, kind, now, opened_here=opened))

    def flush(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for this container's queued store writes; True when done."""
        return self._writer.flush(timeout_s)

    def states(self) -> dict[str, CircuitState]:
        """Each provider's circuit state, for `GET /health`."""
        with self._lock:
            now = self._clock()
            return {name: self._record(name, now).state(now) for name in self._names}

    def retry_after_s(self) -> float:
        """Seconds until the earliest provider may be called again (at least 1)."""
        with self._lock:
            now = self._clock()
            records = [self._record(name, now) for name in self._names]
            waits = [record.open_until - now if record.open_until else 0.0 for record in records]
            return max(1.0, min(waits, default=0.0))

    def _cooldown_s(self, kind: FailureKind, record: CircuitRecord) -> float | None:
        """How long a failure that left `record` opens the circuit for, if it does."""
        settings = self._settings
        if kind.category is FailureCategory.MISCONFIGURED:
            return settings.misconfigured_cooldown_s
        # An open circuit that failed again (its probe, say) opens again, however
        # few failures opened it: a misconfiguration opens it at the first.
        if record.failures >= settings.circuit_failure_threshold or record.open_until:
            return settings.circuit_cooldown_s
        return None

    def _store_failure(
        self, name: str, kind: FailureKind, now: float, *, opened_here: bool
    ) -> CircuitRecord | None:
        """The writer's half of `record_failure`: the store's record afterwards, if it answered."""
        expires_at = now + _RECORD_TTL_S
        stored = self._store_call(lambda store: store.add_failure(name, kind.value, expires_at))
        if stored is None:
            return None
        # Decided on the store's count, so that the failures of every container add up.
        cooldown_s = self._cooldown_s(kind, stored)
        if cooldown_s is None:
            return stored
        until = now + cooldown_s
        self._store_call(lambda store: store.open(name, until, expires_at))
        if not opened_here:
            logger.warning(
                "circuit opened",
                extra={"provider": name, "failure": kind.value, "cooldown_s": cooldown_s},
            )
        return replace(stored, open_until=until)

    def _write(self, name: str, write: Callable[[], CircuitRecord | None]) -> None:
        """Queue `write` of `name` (the lock is held); what it returns becomes this view."""

        def task() -> None:
            stored = None
            try:
                stored = write()
            finally:
                with self._lock:
                    self._pending[name] -= 1
                    # A later write queued meanwhile already changed this view.
                    if stored is not None and not self._pending[name]:
                        self._records[name] = stored

        self._pending[name] += 1
        if not self._writer.submit(task):
            self._pending[name] -= 1
            logger.warning(
                "circuit store write dropped: too many queued; counted in this container only",
                extra={"provider": name, "capacity": self._writer.capacity},
            )

    def _record(self, name: str, now: float) -> CircuitRecord:
        if now - self._loaded_at >= self._settings.circuit_cache_s:
            loaded = self._store_call(lambda store: store.load(self._names))
            for loaded_name, record in (loaded or {}).items():
                # Writes still queued are newer than what the store has.
                if not self._pending[loaded_name]:
                    self._records[loaded_name] = record
            self._loaded_at = now
        return self._records.get(name, CircuitRecord())

    def _store_call(self, operation: Callable[[CircuitStore], T]) -> T | None:
        """`operation` on the store; None while the store is failing, or when it fails now."""
        now = self._clock()
        if now < self._degraded_until:
            return None
        try:
            return operation(self._store)
        # Any failure of the store (DynamoDB down, throttled, a bad item) must not
        # fail the generation: the circuit is an optimisation, not a dependency.
        except Exception as error:
            logger.warning(
                "circuit store failed; using this container's state",
                extra={"error": f"{type(error).__name__}: {error}"},
            )
            self._degraded_until = now + max(self._settings.circuit_cache_s, 1.0)
            return None
