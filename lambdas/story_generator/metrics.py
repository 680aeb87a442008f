"""Per-attempt AI provider metrics, written to stdout in the Embedded Metric Format.

CloudWatch Logs turns each document into metrics in `LiminalTransit/AIProviders`
with the dimensions Provider and Environment, so recording costs no API call on
the request path. Each attempt is its own document (flushed at once) so that a
Lambda timeout never loses the attempts before it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

NAMESPACE: Final = "LiminalTransit/AIProviders"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call to one provider, as it is recorded."""

    provider: str
    model: str
    latency_ms: float
    success: bool
    fallback: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    failure: str | None = None


class ProviderMetrics:
    """Writes one EMF document per provider attempt."""

    def __init__(self, environment: str, *, namespace: str = NAMESPACE) -> None:
        self._environment = environment
        # EphemeralMetrics keeps no state shared with other Metrics instances, and an
        # explicit empty service keeps Powertools from adding a `service` dimension
        # (which would split the metrics from the alarms on Provider + Environment).
        self._metrics = EphemeralMetrics(namespace=namespace, service="")
        self._lock = threading.Lock()

    def record(self, attempt: Attempt) -> None:
        """Emit ResponseTime, InputTokens, OutputTokens, Cost, Success, Failure and Fallback."""
        with self._lock:  # one document at a time: flushing clears the instance
            self._emit(attempt)

    def _emit(self, attempt: Attempt) -> None:
        metrics = self._metrics
        metrics.add_dimension("Provider", attempt.provider)
        metrics.add_dimension("Environment", self._environment)
        metrics.add_metric("ResponseTime", MetricUnit.Milliseconds, attempt.latency_ms)
        metrics.add_metric("InputTokens", MetricUnit.Count, attempt.input_tokens)
        metrics.add_metric("OutputTokens", MetricUnit.Count, attempt.output_tokens)
        metrics.add_metric("Cost", MetricUnit.NoUnit, attempt.cost_usd)
        metrics.add_metric("Success", MetricUnit.Count, int(attempt.success))
        metrics.add_metric("Failure", MetricUnit.Count, int(not attempt.success))
        metrics.add_metric("Fallback", MetricUnit.Count, int(attempt.fallback))
        # Searchable in CloudWatch Logs Insights, not dimensions (they would multiply cost).
        metrics.add_metadata("Model", attempt.model)
        if attempt.failure is not None:
            metrics.add_metadata("FailureKind", attempt.failure)
        metrics.flush_metrics()
