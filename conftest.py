"""Pytest plugins shared by the whole suite (pytest reads ``pytest_plugins`` only here)."""

pytest_plugins = [
    "tests.lambdas.fake_providers",
    "tests.lambdas.aws_fixtures",
]
