"""A user runs `make serve` or builds the image months from now and gets the packages the
service was tested with: requirements.lock pins every runtime package, with hashes, within the
ranges pyproject.toml allows; `make serve` and the Dockerfile install from it."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support.server import REPO

LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.MULTILINE)


def _pinned() -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall(LOCK.read_text())}


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    """The service's own dependencies and its [tracing] extra, which the image carries."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"] + project["optional-dependencies"]["tracing"]
    pinned = _pinned()
    for line in dependencies:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {line!r}"


def test_every_pin_carries_hashes_and_nothing_names_this_machine() -> None:
    text = LOCK.read_text()
    entries = re.findall(r"^[A-Za-z0-9].*==.*(?:\n .*)*", text, re.MULTILINE)
    assert len(entries) == len(_pinned()) > 10
    assert all("--hash=sha256:" in entry for entry in entries)
    assert "--index-url" not in text and "--find-links" not in text and "file://" not in text


def test_make_serve_and_the_image_install_from_the_lock() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "install --quiet --require-hashes -r requirements.lock" in makefile
    assert "install --quiet --no-deps -e ." in makefile
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
