"""Every code block of README.md and docs/*.md that a reader would copy runs here as written, or says in the markdown
why it cannot; and the newcomer's path, as the documentation gives it.

How a block runs (tests/doc_blocks.py reads them):
- python and bash blocks (and indented blocks: the README's commands) run in document order, one process per
  document like a notebook: python blocks share one namespace, bash blocks run with `bash -e -o pipefail` in the same
  folder, a temporary one holding links to the repository's examples/, configs/, tests/, tools/ and .venv, with the
  project's venv first on PATH, tests/ on PYTHONPATH (tests/doc_inputs.py), `../shared` where the checkout has one,
  the Hugging Face Hub offline, and curl failing on an HTTP error status. Running one block alone runs the blocks of
  its document before it first. Blocks in other languages (JSON, YAML) or none (output, diagrams) are shown, not run.
- A comment right above a block says how it runs here, invisibly in the rendered page:
  `<!-- doc-test: skip: WHY -->` (the Hub, a GPU, Docker, a long job: reported as the skip reason),
  `<!-- doc-test: setup: CODE -->` (code of the block's language run first: the inputs a fragment supposes), and
  `<!-- doc-test: replace: "OLD" with "NEW" WHY -->` (a Hub id by a local model, a long run by a short one).
- `http://127.0.0.1:3000` is a real server, started once for the blocks that call it: `serve.local.local_server`
  runs `make serve`'s `bentoml serve serve.service:TotoService --host 127.0.0.1` on a free port (checked against the
  Makefile below), whose URL the blocks get instead; a `make serve` line in a block is that server.
A block that fails, unmarked, fails its test with its output and the traceback, naming its line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from partial_install import missing

pytest.importorskip("markdown_it", reason=missing("dev"))

from doc_blocks import Block, blocks

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [block for document in DOCUMENTS for block in blocks(document, REPO)]
LINKED = ("examples", "configs", "tests", "tools", "Makefile", "constraints.txt", "pyproject.toml")
SERVER_URL = "http://127.0.0.1:3000"
MAKE_SERVE = re.compile(r"^make serve\b.*$", re.M)


class DocumentRun:
    """One document's blocks running in order in one process (tests/doc_blocks.py), in a folder of its own."""

    def __init__(self, document: str, folder: Path) -> None:
        self.blocks = [block for block in BLOCKS if block.path == document and block.runs and not block.skip]
        self.done: dict[str, str | None] = {}  # label -> error, for the blocks that ran
        workdir = folder / "repo"
        workdir.mkdir(parents=True)
        for name in LINKED:
            (workdir / name).symlink_to(REPO / name)
        (workdir / ".venv").symlink_to(Path(sys.executable).parents[1])
        if (REPO.parent / "shared").is_dir():  # `../shared`, as the documents name it from the repository
            (folder / "shared").symlink_to(REPO.parent / "shared")
        self.log_path = folder / "output.log"
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO / "tests"),
            "HF_HUB_OFFLINE": "1",
            "MPLBACKEND": "Agg",
            "BENTOML_HOME": str(folder / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
        }
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "doc_blocks.py")], cwd=workdir, env=env, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )

    def run(self, block: Block, server: Callable[[], str]) -> None:
        """Run `block`, after the blocks of its document before it that have not run; fail with its output.
        `server()` gives the URL of the server for the blocks that call one."""
        for earlier in self.blocks[: self.blocks.index(block)]:
            if earlier.label not in self.done:
                self._run(earlier, server)
            if self.done[earlier.label] is not None:
                pytest.fail(f"{earlier.label}, which {block.label} follows, failed:\n{self.done[earlier.label]}",
                            pytrace=False)
        error = self.done[block.label] if block.label in self.done else self._run(block, server)
        if error is not None:
            pytest.fail(f"{block.label} failed:\n{error}", pytrace=False)

    def _run(self, block: Block, server: Callable[[], str]) -> str | None:
        code = block.runnable()
        if SERVER_URL in code or MAKE_SERVE.search(code):
            code = MAKE_SERVE.sub("", code.replace(SERVER_URL, server()))
        start = self.log_path.stat().st_size
        assert self.process.stdin is not None and self.process.stdout is not None
        for part, label in ((block.setup, f"{block.label} (setup)"), (code, block.label)):
            if part is None:
                continue
            self.process.stdin.write(json.dumps({"language": block.language, "code": part, "label": label}) + "\n")
            self.process.stdin.flush()
            answer = self.process.stdout.readline()
            error = json.loads(answer)["error"] if answer else f"the block runner exited ({self.process.poll()})"
            if error is not None:
                with open(self.log_path, "rb") as log:
                    log.seek(start)
                    output = log.read().decode(errors="replace")[-6000:]
                self.done[block.label] = f"{output}\n{error}"
                return self.done[block.label]
        self.done[block.label] = None
        return None

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def doc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real `make serve` server (its command on a free port), for the documents that call one."""
    pytest.importorskip("bentoml", reason="the service needs the 'serve' extra")
    from serve.local import local_server

    with local_server(tmp_path_factory.mktemp("doc-server")) as server:
        yield server.url


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, DocumentRun]]:
    """The documents whose blocks are running, closed at the end of the module."""
    started: dict[str, DocumentRun] = {}
    yield started
    for run in started.values():
        run.close()


@pytest.mark.integration
@pytest.mark.parametrize("block", [block for block in BLOCKS if block.runs], ids=lambda block: block.label)
def test_documented_code_runs(block: Block, runs: dict[str, DocumentRun], request: pytest.FixtureRequest,
                              tmp_path_factory: pytest.TempPathFactory) -> None:
    if block.skip:
        pytest.skip(f"{block.label}: {block.skip}")
    if block.path not in runs:
        runs[block.path] = DocumentRun(block.path, tmp_path_factory.mktemp(Path(block.path).stem))
    runs[block.path].run(block, lambda: request.getfixturevalue("doc_server"))


def test_the_documents_server_is_make_serve() -> None:
    """The blocks that call http://127.0.0.1:3000 get `serve.local.local_server`'s server: `make serve`'s command on
    a free port."""
    recipe = re.search(r"^serve:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M)
    assert recipe and recipe.group(1).endswith(
        "/bentoml serve serve.service:TotoService --host 127.0.0.1 --port 3000"), recipe
    local = (REPO / "serve" / "local.py").read_text()
    assert '"serve", "serve.service:TotoService", "--host", "127.0.0.1", "--port", str(port)' in local


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_the_first_install_shows_its_progress(tmp_path):
    """`make demo` and `make test` create .venv first: minutes of downloads (PyTorch, every extra) that a quiet pip
    showed as silence. pip runs without -q, each package shown as it comes, still pinned by constraints.txt and
    never upgrading what is there."""
    dry_run = subprocess.run(["make", "-n", "venv", f"VENV={tmp_path / 'venv'}"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
    installs = [line.split() for line in dry_run.splitlines() if " install " in line]
    assert len(installs) == 2, dry_run
    for words in installs:
        assert not {"-q", "-qq", "--quiet", "-U", "--upgrade"} & set(words), " ".join(words)
    assert installs[-1][installs[-1].index("-c"):][:2] == ["-c", "constraints.txt"]


def test_blocks_are_found_with_the_comments_that_say_how_they_run(tmp_path):
    """Fenced and indented blocks (in list items too) with the directives right above them; a replacement that no
    longer matches its block, and a directive that cannot be read, are errors that name the line."""
    page = tmp_path / "page.md"
    page.write_text(
        "Intro.\n\n"
        "1. Train:\n\n"
        "   <!-- doc-test: setup: python -m doc_inputs my_metrics.csv -->\n"
        '   <!-- doc-test: replace: "Datadog/Toto-Open-Base-1.0" with "toto-tiny" (offline) -->\n'
        "       toto-train fit --model.pretrained Datadog/Toto-Open-Base-1.0\n\n"
        "2. Forecast:\n\n"
        "   ```python\n   print(1)\n   ```\n\n"
        "<!-- doc-test: skip: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
        "```json\n{\"a\": 1}\n```\n"
    )
    train, forecast, gpu, answer = blocks(page, tmp_path)
    assert (train.label, train.language, train.setup) == ("page.md:7", "bash", "python -m doc_inputs my_metrics.csv")
    assert train.runnable() == "toto-train fit --model.pretrained toto-tiny\n"
    assert (forecast.line, forecast.language, forecast.code, forecast.skip) == (11, "python", "print(1)\n", None)
    assert gpu.skip == "needs a GPU" and gpu.runs
    assert not answer.runs
    stale = Block("page.md", 7, "bash", "toto-train fit\n", replacements=train.replacements)
    with pytest.raises(ValueError, match="page.md:7: doc-test replace 'Datadog/Toto-Open-Base-1.0' no longer matches"):
        stale.runnable()
    page.write_text("<!-- doc-test: skipp: typo -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="page.md:2: cannot read"):
        blocks(page, tmp_path)
