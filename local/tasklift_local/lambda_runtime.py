"""What a Lambda handler sees: the context object, and execution environments to run it in.

Lambda runs one invocation at a time per execution environment and keeps the environment (its
imported modules, its connections, its event loop) warm between invocations. Here an environment
is a thread with its own event loop, so handlers that drive asyncio themselves (Mangum calls
``asyncio.get_event_loop()``) find one, as they do on Lambda's main thread.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # AWS's documentation account id: nothing here is a real account


class LambdaContext:
    """The context object of the Python runtime (AWS Lambda "Using the Lambda context object in Python")."""

    def __init__(self, function_name: str, memory_mb: int, timeout: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before Lambda stops this invocation."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _new_event_loop() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())


def execution_environments(count: int = 16) -> ThreadPoolExecutor:
    """A pool of warm environments, each a thread with its own event loop."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="lambda-env", initializer=_new_event_loop)


def load_handler(code_dir: Path, handler: str, environment: dict[str, str]) -> Callable[[dict[str, Any], Any], Any]:
    """Import ``module.attribute`` from ``code_dir`` as Lambda does (code_dir on sys.path, like /var/task).

    The template's plain environment variables are applied first unless the local environment
    already sets them (as ``sam local --env-vars`` overrides do).
    """
    for key, value in environment.items():
        os.environ.setdefault(key, value)
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    module_name, _, attribute = handler.rpartition(".")
    loaded = sys.modules.get(module_name)
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(code_dir)):
        del sys.modules[module_name]  # a module of the same name from another code folder
        sys.path.remove(str(code_dir))
        sys.path.insert(0, str(code_dir))
    module = importlib.import_module(module_name)
    return getattr(module, attribute)  # type: ignore[no-any-return]
