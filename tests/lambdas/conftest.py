"""Fixtures for the Lambda tests live in plugin modules, one per concern."""

pytest_plugins = [
    "tests.lambdas.fake_providers",
    "tests.lambdas.aws_fixtures",
]
