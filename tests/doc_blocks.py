"""The code blocks of the documentation, as tests/test_doc_examples.py runs them.

`blocks(path)` reads a markdown file's code blocks (fenced and indented, found by markdown-it as a renderer finds
them) with the `<!-- doc-test: ... -->` comments right above each, which say how it runs here. `Block.runnable()`
is the code as it runs: the document's own text with the comments' replacements applied.

Run as a script (`python doc_blocks.py`), this module is the process that runs one document's blocks in order, like a
notebook: python blocks in one namespace, shell blocks with bash in the same folder. It reads one block per line of
stdin as JSON ({"language", "code", "label"}) and answers each on its own channel with {"error": null or the
traceback}; what the blocks print goes to stderr.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

DIRECTIVE = re.compile(r"^<!-- doc-test: (skip|setup|replace): (.+) -->$")
SHELLS = {"bash", "sh", "shell"}
# Before every shell block: curl fails on an HTTP error status (it prints the body and exits 0 otherwise), so that a
# documented request answered 4xx or 5xx fails its block.
SHELL_PRELUDE = 'curl() { command curl --fail-with-body "$@"; }\n'


@dataclass(frozen=True)
class Replacement:
    """`old` in the block runs as `new` (the words after them in the comment say why, to the reader)."""

    old: str
    new: str


@dataclass(frozen=True)
class Block:
    """One code block: `line` is where it starts in `path` (1-based), `language` its fence's language ("bash" for an
    indented block: the README's commands; "" for a fence without one: output, diagrams)."""

    path: str
    line: int
    language: str
    code: str
    skip: str | None = None  # why it does not run here
    setup: str | None = None  # code of the block's language run just before it (the inputs a fragment supposes)
    replacements: tuple[Replacement, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def runs(self) -> bool:
        """Python and shell blocks are code to run; others (JSON, YAML, output, diagrams) are shown, not run."""
        return self.language == "python" or self.language in SHELLS

    def runnable(self) -> str:
        """The code as it runs here: the block with its replacements, each of which must still match."""
        code = self.code
        for replacement in self.replacements:
            if replacement.old not in code:
                raise ValueError(f"{self.label}: doc-test replace {replacement.old!r} no longer matches the block")
            code = code.replace(replacement.old, replacement.new)
        return code


def blocks(path: Path, root: Path) -> list[Block]:
    """The code blocks of markdown file `path`, in order, named relative to `root`."""
    from markdown_it import MarkdownIt

    lines = path.read_text().splitlines()
    found = []
    for token in MarkdownIt("commonmark").parse("\n".join(lines)):
        if token.type not in ("fence", "code_block") or token.map is None:
            continue
        start = token.map[0]
        language = token.info.split()[0] if token.info.strip() else ("bash" if token.type == "code_block" else "")
        block = Block(str(path.relative_to(root)), start + 1, language, token.content)
        directives = []
        above = start - 1
        while above >= 0 and lines[above].strip().startswith("<!-- doc-test"):
            directives.insert(0, lines[above].strip())
            above -= 1
        found.append(_with_directives(block, directives))
    return found


def _with_directives(block: Block, directives: list[str]) -> Block:
    skip, setup, replacements = None, None, []
    for text in directives:
        match = DIRECTIVE.match(text)
        if match is None:
            raise ValueError(f"{block.label}: cannot read {text!r}: write <!-- doc-test: skip: WHY -->, "
                             "<!-- doc-test: setup: CODE --> or <!-- doc-test: replace: \"OLD\" with \"NEW\" WHY -->")
        kind, argument = match.groups()
        if kind == "skip":
            skip = argument
        elif kind == "setup":
            setup = argument
        else:
            words = shlex.split(argument)
            if len(words) < 3 or words[1] != "with":
                raise ValueError(f"{block.label}: write the replacement as replace: \"OLD\" with \"NEW\" WHY, "
                                 f"not {argument!r}")
            replacements.append(Replacement(words[0], words[2]))
    return Block(block.path, block.line, block.language, block.code, skip, setup, tuple(replacements))


def _run_blocks() -> None:
    """Run the blocks sent on stdin; answer on the channel that was stdout, while the blocks' own output (and that of
    the commands they start) goes to stderr."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    namespace: dict[str, object] = {"__name__": "__main__"}
    for request in map(json.loads, sys.stdin):
        print(f"\n===== {request['label']} =====", file=sys.stderr, flush=True)
        try:
            if request["language"] == "python":
                exec(compile(request["code"], request["label"], "exec"), namespace)  # the documentation's own code
            else:
                subprocess.run(["bash", "-e", "-o", "pipefail", "-c", SHELL_PRELUDE + request["code"]], check=True)
            error = None
        except BaseException:  # SystemExit too: a block that exits fails, and the next one still runs
            error = traceback.format_exc()
        sys.stderr.flush()
        answers.write(json.dumps({"error": error}) + "\n")
        answers.flush()


if __name__ == "__main__":
    _run_blocks()
