"""The version of tasklift (the same as pyproject.toml's; telemetry reports it as service.version)."""

__version__ = "0.1.0"
