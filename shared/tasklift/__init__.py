"""tasklift: long-running operations behind HTTP APIs.

Task authors import from here::

    from tasklift import task, TaskContext, RetryableError
"""

from tasklift.tasks.context import Cancelled, TaskContext
from tasklift.tasks.registry import RetryableError, task

__all__ = ["Cancelled", "RetryableError", "TaskContext", "task"]
__version__ = "0.1.0"
