"""The optional dependencies ("extras") each command needs, read from the package's own metadata, and a one-line
message naming the missing ones and the pip command that installs them.

The console scripts start here (`pyproject.toml`, `[project.scripts]`): the check runs before the command's module
is imported, so a missing extra ends in `toto: needs the 'cli' extra (missing: pandas): pip install
'open-toto[cli]'` instead of an ImportError traceback. The extras themselves are listed once, in pyproject.toml.
"""

from __future__ import annotations

import importlib
import re
import sys
from importlib import metadata

DISTRIBUTION = "open-toto"


class MissingExtraError(ImportError):
    """An optional dependency group of the package is not (fully) installed."""


def extra_requirements(extra: str) -> list[str]:
    """Distribution names that `pip install open-toto[extra]` installs (empty when the package is not installed,
    e.g. run from a source tree, where nothing can be checked)."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    names = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            name = re.match(r"[A-Za-z0-9_.\-]+", spec.strip())
            assert name is not None  # a requirement (PEP 508) starts with its distribution's name
            names.append(name.group(0))
    return names


def require_extra(extra: str, command: str) -> None:
    """Raise MissingExtraError naming what `command` lacks of `extra`, and how to install it."""
    missing = []
    for name in extra_requirements(extra):
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"{command} needs the '{extra}' extra (missing: {', '.join(missing)}): "
            f"pip install '{DISTRIBUTION}[{extra}]' -c constraints.txt"
        )


def _launch(extra: str, command: str, target: str) -> int:
    try:
        require_extra(extra, command)
    except MissingExtraError as error:
        sys.exit(f"{command}: {error}")
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)()


def toto_command() -> int:
    """The `toto` console script."""
    return _launch("cli", "toto", "toto.cli:main")


def toto_train_command() -> int:
    """The `toto-train` console script."""
    return _launch("train", "toto-train", "train.cli:main")


def boom_command() -> int:
    """The `boom` console script."""
    return _launch("boom", "boom", "boom.cli:main")
