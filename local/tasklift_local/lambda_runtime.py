"""What a Lambda handler sees: its own process, the context object, one invocation at a time.

Lambda gives every function its own execution environments: a process that imports the handler's
module once (the init phase) with the function's environment variables, then runs one invocation
at a time and stays warm between them (its modules, its connections, its event loop). Here an
environment is the same: a child process with exactly the function's environment, talking to the
emulator over a pipe, one invocation at a time.

Children come from multiprocessing's fork server, which can import libraries once before it forks
(``preload``): a child then pays only for its handler's own init, as a Lambda function whose
layers are already on disk would. Nothing that reads the function's settings may be preloaded.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import multiprocessing
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio

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


class EnvironmentDied(RuntimeError):
    """The environment's process ended (a crash, or killed after a timeout)."""


def fork_server(preload: Sequence[str] = ()) -> Any:
    """The multiprocessing context environments start from (its server imports ``preload`` once)."""
    context = multiprocessing.get_context("forkserver")
    if preload:
        context.set_forkserver_preload(list(preload))  # honoured by the first server this process starts
    return context


class ExecutionEnvironment:
    """One execution environment of one function: a warm child process, one invocation at a time.

    The pipe is read in a worker thread (any event loop, any thread: the emulator also runs inside
    test threads); an invocation that times out is abandoned and its process killed.
    """

    def __init__(self, function: str, code_dir: Path, handler: str, environment: dict[str, str], context: Any) -> None:
        self.function, self.code_dir, self.handler, self.context = function, code_dir, handler, context
        # The function's variables, unless the local environment sets them (as `sam local --env-vars` does).
        self.env = {**environment, **os.environ, "AWS_LAMBDA_FUNCTION_NAME": function, "AWS_REGION": REGION}
        self.conn: Connection | None = None
        self.proc: Any = None

    async def start(self) -> None:
        """The init phase: start the process and wait until it has imported the handler."""
        ours, theirs = self.context.Pipe()
        self.proc = self.context.Process(
            target=_run, args=(theirs, self.env, str(self.code_dir), self.handler), name=f"lambda-{self.function}"
        )
        await anyio.to_thread.run_sync(self.proc.start)
        theirs.close()
        self.conn = ours
        ready = await self._exchange(None)
        if ready.get("ready") is not True:
            raise EnvironmentDied(f"{self.function}: init failed: {ready.get('error', ready)}")

    async def invoke(self, event: dict[str, Any], memory_mb: int, timeout: float) -> dict[str, Any]:
        """Run the handler on ``event``: ``{"result": …}``, ``{"error": …}`` or ``{"not_json": True}``."""
        return await self._exchange({"event": event, "memory_mb": memory_mb, "timeout": timeout})

    async def _exchange(self, request: dict[str, Any] | None) -> dict[str, Any]:
        # In anyio's worker threads: the emulator raises their limit to its environments' count.
        return await anyio.to_thread.run_sync(self._blocking_exchange, request, abandon_on_cancel=True)

    def _blocking_exchange(self, request: dict[str, Any] | None) -> dict[str, Any]:
        assert self.conn is not None
        try:
            if request is not None:
                self.conn.send(request)
            answer: dict[str, Any] = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise EnvironmentDied(f"{self.function}: the environment's process has ended") from exc
        return answer

    def kill(self) -> None:
        """End the environment at once (what Lambda does to one whose invocation timed out)."""
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.conn is not None:
            self.conn.close()


def load_handler(code_dir: Path, handler: str) -> Callable[[dict[str, Any], Any], Any]:
    """Import ``module.attribute`` from ``code_dir`` as Lambda does (code_dir on sys.path, like /var/task)."""
    sys.path.insert(0, str(code_dir))
    module_name, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_name)
    return getattr(module, attribute)  # type: ignore[no-any-return]


def _run(conn: Connection, env: dict[str, str], code_dir: str, handler: str) -> None:
    """The environment's process: init, then one invocation per message, answered on the pipe."""
    os.environ.clear()
    os.environ.update(env)
    # Handlers that drive asyncio themselves (Mangum calls asyncio.get_event_loop()) find a loop,
    # as they do on Lambda's main thread.
    asyncio.set_event_loop(asyncio.new_event_loop())
    try:
        function = load_handler(Path(code_dir), handler)
    except BaseException as exc:
        traceback.print_exc()
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    conn.send({"ready": True})
    name = env["AWS_LAMBDA_FUNCTION_NAME"]
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the emulator has gone: so does its environment
            return
        context = LambdaContext(name, request["memory_mb"], request["timeout"])
        try:
            answer: dict[str, Any] = {"result": function(request["event"], context)}
        except Exception as exc:
            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            json.dumps(answer)  # what Lambda serialises; the emulator answers 500 for anything else
        except (TypeError, ValueError):
            answer = {"not_json": True}
        conn.send(answer)
