"""metrics.py: one valid Embedded Metric Format document per provider attempt."""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.story_generator.generation import GenerationRequest, Message
from lambdas.story_generator.metrics import NAMESPACE, Attempt, ProviderMetrics
from tests.lambdas.fake_providers import FakeProvider, accept_json, emf_documents, router_for

# CloudWatch's MetricDatum units, the only ones EMF accepts.
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
METRICS = {
    "ResponseTime": "Milliseconds",
    "InputTokens": "Count",
    "OutputTokens": "Count",
    "Cost": "None",
    "Success": "Count",
    "Failure": "Count",
    "Fallback": "Count",
}


def assert_valid_emf(document: dict[str, Any]) -> None:
    """The EMF specification's rules that CloudWatch Logs enforces before extracting metrics."""
    aws = document["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_600_000_000_000, "epoch ms"
    (directive,) = aws["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE
    for dimension_set in directive["Dimensions"]:
        assert len(dimension_set) <= 30
        for key in dimension_set:
            assert isinstance(document.get(key), str) and document[key], f"dimension {key} at root"
    for metric in directive["Metrics"]:
        assert metric["Unit"] in UNITS, metric
        assert metric.get("StorageResolution", 60) in (1, 60)
        value = document.get(metric["Name"])
        values = value if isinstance(value, list) else [value]
        assert values and all(isinstance(v, int | float) for v in values), (
            f"{metric['Name']} at root"
        )


def test_an_attempt_is_one_document_with_every_metric(capsys: pytest.CaptureFixture[str]) -> None:
    ProviderMetrics("staging").record(
        Attempt(
            provider="openai",
            model="gpt-4o",
            latency_ms=812.5,
            success=False,
            fallback=True,
            input_tokens=120,
            output_tokens=4,
            cost_usd=0.0004,
            failure="truncated",
        )
    )

    (document,) = emf_documents(capsys.readouterr().out)
    assert_valid_emf(document)
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Dimensions"] == [["Provider", "Environment"]]
    assert {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]} == METRICS
    assert (document["Provider"], document["Environment"]) == ("openai", "staging")
    assert [document[name] for name in METRICS] == [
        [812.5], [120.0], [4.0], [0.0004], [0.0], [1.0], [1.0]
    ]  # fmt: skip
    assert (document["Model"], document["FailureKind"]) == ("gpt-4o", "truncated")


def test_each_document_carries_only_its_own_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = ProviderMetrics("dev")

    metrics.record(Attempt("a", "m", 5.0, success=False, fallback=False, failure="timeout"))
    metrics.record(Attempt("b", "m", 6.0, success=True, fallback=True))

    failed, succeeded = emf_documents(capsys.readouterr().out)
    assert (failed["Provider"], failed["FailureKind"]) == ("a", "timeout")
    assert (succeeded["Provider"], succeeded["ResponseTime"]) == ("b", [6.0])
    assert "FailureKind" not in succeeded, "nothing carries over from the previous attempt"


def test_no_service_dimension_splits_the_metrics_from_the_alarms(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "story-generator")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Somewhere/Else")

    ProviderMetrics("dev").record(Attempt("mock", "mock", 1.0, success=True, fallback=False))

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Provider", "Environment"]]
    assert "service" not in document
    assert_valid_emf(document)


def test_a_fallback_call_emits_a_valid_document_per_attempt(
    fake_openai: FakeProvider, fake_anthropic: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_openai.fail(503, "", "Down")
    fake_anthropic.reply("not a beat")
    mock = {"name": "mock", "kind": "mock", "priority": 3}
    router = router_for(fake_openai.entry(), fake_anthropic.entry(priority=2), mock)

    router.generate(GenerationRequest("", (Message("user", "Go"),)), accept_json)

    documents = emf_documents(capsys.readouterr().out)
    for document in documents:
        assert_valid_emf(document)
    summary = [
        (d["Provider"], d["Success"], d["Fallback"], d.get("FailureKind")) for d in documents
    ]
    assert summary == [
        ("openai", [0.0], [0.0], "unavailable"),
        ("anthropic", [0.0], [1.0], "malformed"),
        ("mock", [1.0], [1.0], None),
    ]
