"""The one rule for what a test needs from outside the project's Python code: a system tool
(chromium, nginx, docker, curl, ...) or an optional package (playwright, tritonclient, ...).
Missing on a developer's machine: the test is skipped with the reason. Missing in CI (CI set,
where .ci/run installs everything): the test fails, so CI never skips silently."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_tool(name: str, *candidates: str) -> str:
    """The path of a system tool a test drives for real: `name` on PATH, else the first of
    `candidates` (names or paths) that exists."""
    for candidate in (name, *candidates):
        path = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if path:
            return path
    _missing(f"{name} is not installed (.ci/run installs it with apt-get)")


def require_module(name: str) -> ModuleType:
    """An optional package a test drives (from the [test] extra), imported."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        _missing(f"{name} cannot be imported ({error}); `make test` installs the [test] extra")
