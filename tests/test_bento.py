"""`bentoml build` packs the service from bentofile.yaml, with the Python requirements of pyproject.toml.

The requirements file is written by `tools.bento_requirements` (as `make bento` does) and the Bento is built by
the real `bentoml build` into a temporary BentoML home. The test then reads the Bento's own requirements and
compares them with pyproject.toml read directly: every runtime dependency and every package of the `serve` extra,
with its specifiers, and torch pinned to its CPU build. The tool's rules (own extras followed, specifiers merged,
clear errors) are checked on small pyproject tables.
"""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import os
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.bento_requirements import merged, project_requirements, read_pyproject, with_torch_build

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a Bento built from this tree's bentofile.yaml."""
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([sys.executable, "-m", "tools.bento_requirements"], cwd=REPO, check=True, env=env)
    build = subprocess.run(
        [str(BIN / "bentoml"), "build", "--bentofile", "bentofile.yaml", "--output", "tag", "."],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")  # toto:<version>
    name, version = tag.split(":")
    return home / "bentos" / name / version


@pytest.mark.integration
def test_bento_holds_the_service_its_code_and_the_embedded_model(bento: Path) -> None:
    for path in ("serve/service.py", "serve/engine.py", "toto/model/toto.py",
                 "toto/checkpoints/toto-tiny/model.safetensors", "toto/checkpoints/toto-tiny/config.json"):
        assert (bento / "src" / path).is_file(), path
    manifest = (bento / "bento.yaml").read_text()
    assert "service: serve.service:TotoService" in manifest
    assert "/forecast" in manifest
    assert (bento / "env" / "docker" / "Dockerfile").is_file()


@pytest.mark.integration
def test_bento_requirements_are_pyproject_dependencies_and_serve_extra(bento: Path) -> None:
    project = read_pyproject(REPO)["project"]
    declared = [Requirement(line) for line in project["dependencies"] + project["optional-dependencies"]["serve"]]
    lines = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    # BentoML adds its own exact version (bentoml==X) to what the file lists; the file lists pyproject's packages.
    listed = {}
    for line in lines:
        if line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            listed.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    assert set(listed) == {canonicalize_name(requirement.name) for requirement in declared}
    for requirement in declared:
        specifiers = {str(spec) for found in listed[canonicalize_name(requirement.name)] for spec in found.specifier}
        assert {str(spec) for spec in requirement.specifier} <= specifiers, requirement
    # ... because bentofile.yaml installs the file the tool writes, and lists no packages by hand.
    python = yaml.safe_load((REPO / "bentofile.yaml").read_text())["python"]
    assert python["requirements_txt"] == "./build/bento/requirements.txt" and "packages" not in python
    torch_pin = (REPO / "constraints.txt").read_text().split("torch==", 1)[1].split()[0]
    assert f"=={torch_pin}+cpu" in {str(spec) for spec in listed["torch"][0].specifier}


PYPROJECT = {
    "project": {
        "name": "demo-pkg",
        "dependencies": ["torch>=2.4", "numpy>=1.24"],
        "optional-dependencies": {
            "serve": ["pandas>=2.0", "demo_pkg[cli]", "numpy<3"],
            "cli": ["pandas<3", "tqdm"],
        },
    }
}


def test_own_extras_are_followed_and_specifiers_of_one_package_merged() -> None:
    requirements = merged(project_requirements(PYPROJECT, "serve"), [Requirement("torch==2.13.0")])
    assert [str(r) for r in requirements] == ["numpy<3,>=1.24", "pandas<3,>=2.0", "torch==2.13.0,>=2.4", "tqdm"]
    assert str(with_torch_build(requirements[2])) == "torch==2.13.0+cpu,>=2.4"


def test_unknown_extra_and_unpinned_torch_are_refused_with_the_fix() -> None:
    with pytest.raises(SystemExit, match="no extra 'web'; its extras are: cli, serve"):
        project_requirements(PYPROJECT, "web")
    with pytest.raises(SystemExit, match=r"must pin torch to one version \(torch==X.Y.Z\)"):
        with_torch_build(Requirement("torch>=2.4"))

