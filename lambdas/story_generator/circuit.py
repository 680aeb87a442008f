"""A circuit breaker per provider, its state shared by every warm container.

A provider's circuit opens after `circuit_failure_threshold` consecutive
failures (at once, for `misconfigured_cooldown_s`, after a misconfiguration);
while open the router skips the provider. Once the cool-down is over the circuit
is half-open: exactly one call, across all containers, probes the provider; its
success closes the circuit, its failure opens it again.

The state lives in a `CircuitStore`: the session table for the Lambda (items
`session_id = "circuit#<name>"`, `timestamp = 0`, with an `expires_at` TTL), or
memory for local runs and tests. Each container caches what it read for
`circuit_cache_s`. A store that fails never fails a generation: the breaker
logs a warning and carries on with local state until the store answers again.

Failures are counted atomically in the store, so every container's failures
add up. A success resets the count only when this container knows of failures
(its cached copy is not clean), so that a healthy provider costs no write per
request; within `circuit_cache_s` a success elsewhere may therefore not reset a
count this container has not seen yet.
"""

from __future__ import annotations

import threading
import time
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


class MemoryCircuitStore:
    """Circuit records in this process only (local runs, tests, and the fallback)."""

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


class CircuitBreaker:
    """The circuits of the configured providers, cached per container (thread-safe)."""

    def __init__(
        self,
        store: CircuitStore,
        names: Iterable[str],
        settings: RouterSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._names = tuple(names)
        self._settings = settings
        self._clock = clock
        self._records: dict[str, CircuitRecord] = {}
        self._loaded_at = float("-inf")
        # While the store is failing: the local state used instead, and until when.
        self._local: MemoryCircuitStore | None = None
        self._degraded_until = float("-inf")
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
            # A probe may outlive the whole call only if its thread is abandoned.
            until = now + self._settings.deadline_s
            if self._call(lambda store: store.claim_probe(name, now, until)):
                self._records[name] = replace(record, probe_until=until)
                logger.info("circuit half-open: probing provider", extra={"provider": name})
                return True
            self._loaded_at = float("-inf")  # another container probes or closed it: re-read
            return False

    def record_success(self, name: str) -> None:
        """Close the circuit of `name` (a write only when it was not already clean)."""
        with self._lock:
            record = self._records.get(name, CircuitRecord())
            if record == CircuitRecord():
                return
            self._call(lambda store: store.reset(name))
            self._records[name] = CircuitRecord()
            if record.open_until:
                logger.info("circuit closed", extra={"provider": name})

    def record_failure(self, name: str, kind: FailureKind) -> None:
        """Count a failure of `name`; open its circuit at the threshold or when misconfigured."""
        with self._lock:
            now = self._clock()
            expires_at = now + _RECORD_TTL_S
            record = self._call(lambda store: store.add_failure(name, kind.value, expires_at))
            settings = self._settings
            cooldown_s = None
            if kind.category is FailureCategory.MISCONFIGURED:
                cooldown_s = settings.misconfigured_cooldown_s
            elif record.failures >= settings.circuit_failure_threshold:
                cooldown_s = settings.circuit_cooldown_s
            if cooldown_s is not None:
                until = now + cooldown_s
                self._call(lambda store: store.open(name, until, expires_at))
                record = replace(record, open_until=until)
                logger.warning(
                    "circuit opened",
                    extra={"provider": name, "failure": kind.value, "cooldown_s": cooldown_s},
                )
            self._records[name] = record

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

    def _record(self, name: str, now: float) -> CircuitRecord:
        if now - self._loaded_at >= self._settings.circuit_cache_s:
            self._records.update(self._call(lambda store: store.load(self._names)))
            self._loaded_at = now
        return self._records.get(name, CircuitRecord())

    def _call(self, operation: Callable[[CircuitStore], T]) -> T:
        """Run `operation` on the store, or on local state while the store is failing."""
        now = self._clock()
        if self._local is None or now >= self._degraded_until:
            try:
                result = operation(self._store)
            # Any failure of the store (DynamoDB down, throttled, a bad item) must not
            # fail the generation: the circuit is an optimisation, not a dependency.
            except Exception as error:
                logger.warning(
                    "circuit store failed; using this container's state",
                    extra={"error": f"{type(error).__name__}: {error}"},
                )
                self._local = MemoryCircuitStore(self._records)
                self._degraded_until = now + max(self._settings.circuit_cache_s, 1.0)
            else:
                self._local = None
                return result
        return operation(self._local)
