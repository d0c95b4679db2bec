"""tasklift: long-running operations behind HTTP APIs.

Task authors import from here::

    from tasklift import task, TaskContext, RetryableError
"""

from tasklift.tasks.context import Cancelled, TaskContext
from tasklift.tasks.registry import RetryableError, task
from tasklift.tasks.waits import WaitTimeout
from tasklift.version import __version__

__all__ = ["Cancelled", "RetryableError", "TaskContext", "WaitTimeout", "__version__", "task"]
