"""The one thing every peer's task does besides its work: note when it started.

Each task appends ``<task id> <time.time()>`` to a file of its own process under ``PEER_STAMPS``
(one small O_APPEND write, the same cost on every peer), so run.py can measure submit → start
without asking any peer's store. Without ``PEER_STAMPS`` it does nothing.
"""

from __future__ import annotations

import os
import time


def stamp(task_id: object) -> None:
    folder = os.environ.get("PEER_STAMPS")
    if folder:
        line = f"{task_id} {time.time():.6f}\n".encode()
        fd = os.open(os.path.join(folder, f"{os.getpid()}.txt"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
