"""The process supervisor of ``tasklift dev``: restarts what dies, as compose's restart policy does.

A child that exits while the stack is up is started again after a back-off (1 s, doubling to 30 s;
back to 1 s once a run lasted a minute), with a line saying so; only Ctrl-C stops the stack. The
first Ctrl-C stops the API first, then the reaper, then the workers, letting a running task finish
for the soft-shutdown window and saying so; a second Ctrl-C kills everything at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from rich.console import Console

from tasklift.embedded import stop_process

#: Back-off before a restart: first, doubling up to the cap; a run this long resets it.
FIRST_BACKOFF, MAX_BACKOFF, STABLE_RUN = 1.0, 30.0, 60.0


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    from tasklift.embedded import _child_setup

    return subprocess.Popen(
        [sys.executable, "-m", "tasklift.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: _child_setup(None, None, signal.SIGTERM),  # noqa: PLW1509
    )


@dataclass
class Child:
    """One supervised ``tasklift`` command."""

    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] = field(init=False)
    started: float = field(init=False, default=0.0)
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None  #: set while it waits to be started again

    def start(self) -> None:
        self.proc, self.started, self.restart_at = _start(self.args, self.env), time.monotonic(), None


class Supervisor:
    """Starts children, restarts them when they die, and stops them in reverse order."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.force = threading.Event()

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        child = Child(name, args, env)
        child.start()
        self.children.append(child)

    def on_signal(self, *_: object) -> None:
        """First Ctrl-C/SIGTERM: a graceful stop. Second: kill everything now."""
        if not self.stopping.is_set():
            self.stopping.set()
            return
        self.force.set()
        self.console.print("[red]second Ctrl-C: killing every process now[/red]")
        for child in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, signal.SIGKILL)  # each child leads its own group (pool included)

    def watch(self) -> None:
        """Until a stop is asked for: restart every child that exited, after its back-off."""
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self.console.print(f"[yellow]starting {child.name} again[/yellow]")
                        child.start()
                elif (code := child.proc.poll()) is not None:
                    if now - child.started >= STABLE_RUN:
                        child.backoff = FIRST_BACKOFF
                    self.console.print(
                        f"[red]{child.name} exited with {code}[/red]; restarting it in {child.backoff:g} s"
                        " (Ctrl-C stops everything)"
                    )
                    child.restart_at = now + child.backoff
                    child.backoff = min(MAX_BACKOFF, child.backoff * 2)

    def stop(self, grace: float) -> None:
        """Stop the children, last started first; a worker may finish its task within ``grace`` s."""
        if any(c.name == "worker" and c.proc.poll() is None for c in self.children):
            self.console.print(
                f"stopping… a running task may finish within {grace:g} s, then it is handed back"
                " (Ctrl-C again to stop at once)"
            )
        else:
            self.console.print("stopping…")
        for child in reversed(self.children):
            if not self.force.is_set():
                stop_process(child.proc, signal.SIGTERM, timeout=grace + 5)
