"""What a test module needs beyond the core, said when it is missing.

At the top of a module that imports an extra's packages, `pytest.importorskip(<a package of the extra>,
reason=missing("boom"))` skips the module at collection on an install without that extra, naming it and the pip
command, instead of failing the whole collection with an ImportError.
"""

from __future__ import annotations


def missing(extra: str) -> str:
    """The skip reason for a module that needs `extra` (pyproject.toml, [project.optional-dependencies])."""
    return f"needs the '{extra}' extra, which is not installed: pip install -e '.[{extra}]' -c constraints.txt"
