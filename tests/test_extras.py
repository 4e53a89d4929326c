"""Each command imports only the core dependencies and its own extra (so `pip install open-toto[extra]` is enough),
and a missing extra ends in one line naming it and the pip command."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from toto import extras

# Entry module of each command, and its extra (pyproject.toml [project.scripts] and [project.optional-dependencies]).
COMMANDS = {"toto.cli": "cli", "train.cli": "train", "boom.cli": "boom", "serve.service": "serve"}
CORE = ["torch", "einops", "safetensors", "huggingface_hub", "numpy", "scipy"]

# Imports a module in a fresh interpreter in which our packages may import only the standard library, our own
# packages and the given distributions' modules; anything else they import raises ImportError naming it.
# Third-party modules may import what they like (their own dependencies are pip's business).
GUARDED_IMPORT = textwrap.dedent("""
    import importlib, importlib.abc, importlib.metadata as md, sys
    module, allowed_dists = sys.argv[1], set(sys.argv[2].split(","))
    ours = {"toto", "train", "boom", "serve"}
    allowed = set(sys.stdlib_module_names) | ours | {"_distutils_hack"}
    for top, dists in md.packages_distributions().items():
        if any(d.lower().replace("_", "-") in allowed_dists for d in dists):
            allowed.add(top)

    class Guard(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in allowed or top.startswith("_"):
                return None
            frame = sys._getframe(1)
            while frame and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
                frame = frame.f_back
            importer = (frame.f_globals.get("__name__", "") if frame else "").split(".")[0]
            if importer in ours:
                raise ImportError(f"{frame.f_globals['__name__']} imports {top}, outside its extra")
            return None

    sys.meta_path.insert(0, Guard())
    importlib.import_module(module)
    print("imported", module)
""")


@pytest.mark.integration
@pytest.mark.parametrize("module", list(COMMANDS))
def test_each_command_imports_only_the_core_and_its_extra(module):
    extra = COMMANDS[module]
    dists = [name.lower() for name in CORE + extras.extra_requirements(extra)]
    assert extras.extra_requirements(extra), "the package metadata is missing: pip install -e . first"
    run = subprocess.run([sys.executable, "-c", GUARDED_IMPORT, module, ",".join(dists)],
                         capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert run.returncode == 0 and f"imported {module}" in run.stdout, run.stderr[-1500:]


def test_a_missing_extra_is_one_line_with_the_install_command(monkeypatch, capsys):
    real_version = extras.metadata.version

    def version(name: str) -> str:
        if name == "pyarrow":
            raise extras.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(extras.metadata, "version", version)
    with pytest.raises(SystemExit) as exit_:
        extras.toto_command()
    assert str(exit_.value.code) == (
        "toto: toto needs the 'cli' extra (missing: pyarrow): pip install 'open-toto[cli]' -c constraints.txt")
