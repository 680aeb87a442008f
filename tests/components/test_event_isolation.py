"""Stacks in one account never see each other's story events.

The buses, rules and patterns that each stack's program declares are replayed
into moto's EventBridge, with a queue standing in for each stack's function,
and events are put the way the function and other producers put them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from components.offline import OfflineRun

BUS = "aws:cloudwatch/eventBus:EventBus"
RULE = "aws:cloudwatch/eventRule:EventRule"
FUNCTION = "aws:lambda/function:Function"
REQUEST = {
    "Source": "liminal-transit",
    "DetailType": "Story Generation Requested",
    "Detail": json.dumps({"action": "start", "genre": "liminal"}),
}


@pytest.fixture
def account(stack_runs: dict[str, OfflineRun]) -> Iterator[dict[str, Any]]:
    """One moto account holding every stack's bus and rule, each rule feeding a queue."""
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = {}
        for stack, run in stack_runs.items():
            bus = run.one(BUS)["name"]
            events.create_event_bus(Name=bus)
            rule = run.one(RULE)
            events.put_rule(
                Name=rule["name"],
                EventBusName=rule["eventBusName"],
                EventPattern=rule["eventPattern"],
            )
            url = sqs.create_queue(QueueName=f"{stack}-function")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            events.put_targets(
                Rule=rule["name"],
                EventBusName=rule["eventBusName"],
                Targets=[{"Id": "function", "Arn": arn["Attributes"]["QueueArn"]}],
            )
            queues[stack] = url
        yield {"events": events, "sqs": sqs, "queues": queues}


def _received(account: dict[str, Any]) -> dict[str, int]:
    sqs = account["sqs"]
    return {
        stack: len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []))
        for stack, url in account["queues"].items()
    }


def _bus_of(run: OfflineRun) -> str:
    return str(run.one(FUNCTION)["environment"]["variables"]["EVENT_BUS_NAME"])


@pytest.mark.parametrize("sender", ["dev", "staging", "production"])
def test_a_request_on_one_stacks_bus_reaches_that_stacks_function_only(
    account: dict[str, Any], stack_runs: dict[str, OfflineRun], sender: str
) -> None:
    bus = _bus_of(stack_runs[sender])
    reply = account["events"].put_events(Entries=[{**REQUEST, "EventBusName": bus}])
    assert reply["FailedEntryCount"] == 0
    expected = {stack: int(stack == sender) for stack in stack_runs}
    assert _received(account) == expected


def test_a_request_on_the_default_bus_reaches_no_stack(account: dict[str, Any]) -> None:
    """The account's default bus is shared: no stack listens there any more."""
    account["events"].put_events(Entries=[{**REQUEST, "EventBusName": "default"}])
    assert _received(account) == {"dev": 0, "staging": 0, "production": 0}


def test_the_events_the_function_publishes_reach_no_function(
    account: dict[str, Any], stack_runs: dict[str, OfflineRun]
) -> None:
    """What the function publishes on its own bus never invokes it (or anyone's function)."""
    from lambdas.story_generator.events import PublishedDetailType

    bus = _bus_of(stack_runs["dev"])
    entries = [
        {**REQUEST, "DetailType": detail_type.value, "EventBusName": bus}
        for detail_type in PublishedDetailType
    ]
    assert account["events"].put_events(Entries=entries)["FailedEntryCount"] == 0
    assert _received(account) == {"dev": 0, "staging": 0, "production": 0}


def test_each_stack_names_its_own_bus(stack_runs: dict[str, OfflineRun]) -> None:
    buses = {stack: _bus_of(run) for stack, run in stack_runs.items()}
    assert len(set(buses.values())) == len(buses), buses
    assert "default" not in buses.values()
