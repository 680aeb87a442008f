"""Liminal Transit: load the typed stack config, build the platform, export its outputs."""

import pulumi

from components.config import load_stack_config
from components.platform import LiminalPlatform

# Validated before anything is declared: a bad key fails here, naming itself.
config = load_stack_config()
platform = LiminalPlatform("liminal", config)

for name, value in platform.exports().items():
    pulumi.export(name, value)
