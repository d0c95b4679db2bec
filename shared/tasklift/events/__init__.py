"""Durable events: publishing after commit, the per-process fan-out hub, SSE encoding and resume."""
