"""Write one benchmark's results into its own section of docs/benchmarks.md.

Every benchmark script owns one section, delimited by HTML comments, so scripts can be rerun in any
order without clobbering each other's tables.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEach section is written by the script named in it; rerun that command to refresh it.\n"


def command_line() -> str:
    """The command that produced the current results, as a user would type it from the repository root."""
    args = " ".join(shlex.quote(a) for a in sys.argv[1:])
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None and spec.name:  # run as `python -m package.module`
        return f"python -m {spec.name} {args}".strip()
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO):
        script = script.relative_to(REPO)
    return f"python {script} {args}".strip()


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section called `name` in docs/benchmarks.md with `markdown`."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
