"""Write the Python requirements of the Bento from pyproject.toml, so that they are never kept by hand.

`bentofile.yaml` installs `build/bento/requirements.txt`; `make bento` writes it with this tool, then runs
`bentoml build`. The requirements are the project's runtime dependencies plus its `serve` extra (references to the
project's own extras, as `open-toto[cli]`, are followed), one line per package with the specifiers of every place
that names it, and the pins of constraints.txt added. BentoML's own pyproject support (`[tool.bentoml.build]`)
reads `project.dependencies` only, not an extra, hence this tool.

torch gets the local version label of its CPU build (`torch==2.13.0+cpu`): the Bento's image is a CPU image, and
only that label keeps pip from taking PyPI's CUDA build of the same version.

    python -m tools.bento_requirements [--extra serve] [--out build/bento/requirements.txt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli, which BentoML requires there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "build" / "bento" / "requirements.txt"
TORCH_BUILD = "cpu"  # the local version label of the torch wheels on https://download.pytorch.org/whl/cpu


def project_requirements(pyproject: dict, extra: str) -> list[Requirement]:
    """The runtime dependencies and those of `extra`, following the project's references to its own extras."""
    project = pyproject["project"]
    own_name = canonicalize_name(project["name"])
    extras = project.get("optional-dependencies", {})
    requirements = [Requirement(line) for line in project.get("dependencies", [])]
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        if current not in extras:
            raise SystemExit(f"pyproject.toml has no extra {current!r}; its extras are: {', '.join(sorted(extras))}")
        seen.add(current)
        for requirement in map(Requirement, extras[current]):
            if canonicalize_name(requirement.name) == own_name:
                pending += sorted(requirement.extras)
            else:
                requirements.append(requirement)
    return requirements


def merged(requirements: list[Requirement], constraints: list[Requirement]) -> list[Requirement]:
    """One requirement per package, sorted by name: the specifiers of all its mentions and of its constraint."""
    by_name: dict[str, Requirement] = {}
    for requirement in requirements:
        key = canonicalize_name(requirement.name)
        if key in by_name:
            kept = by_name[key]
            if kept.marker != requirement.marker:
                raise SystemExit(f"{requirement.name} is required under different markers: {kept} and {requirement}")
            kept.specifier &= requirement.specifier
            kept.extras |= requirement.extras
        else:
            by_name[key] = Requirement(str(requirement))
    for constraint in constraints:
        key = canonicalize_name(constraint.name)
        if key in by_name:
            by_name[key].specifier &= constraint.specifier
    return [by_name[key] for key in sorted(by_name)]


def with_torch_build(requirement: Requirement) -> Requirement:
    """`torch==V` becomes `torch==V+cpu`, the CPU wheel of that version; other requirements are left as they are."""
    if canonicalize_name(requirement.name) != "torch":
        return requirement
    pins = [spec for spec in requirement.specifier if spec.operator == "=="]
    if len(pins) != 1 or "+" in pins[0].version:
        raise SystemExit(f"constraints.txt must pin torch to one version (torch==X.Y.Z), not {requirement}")
    others = [str(spec) for spec in requirement.specifier if spec.operator != "=="]
    specifiers = ",".join([f"=={pins[0].version}+{TORCH_BUILD}", *others])
    return Requirement(f"torch{specifiers}" + (f"; {requirement.marker}" if requirement.marker else ""))


def read_constraints(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def read_pyproject(repo: Path) -> dict:
    return tomllib.loads((repo / "pyproject.toml").read_text())


def bento_requirements(repo: Path, extra: str = "serve") -> list[str]:
    """The Bento's requirement lines, from `repo`'s pyproject.toml and constraints.txt."""
    pyproject = read_pyproject(repo)
    requirements = merged(project_requirements(pyproject, extra), read_constraints(repo / "constraints.txt"))
    return [str(with_torch_build(requirement)) for requirement in requirements]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", default="serve", help="the extra of pyproject.toml the Bento serves with")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the requirements file to write")
    args = parser.parse_args(argv)
    lines = bento_requirements(REPO, args.extra)
    header = (f"# Written by tools/bento_requirements.py from pyproject.toml (dependencies + extra {args.extra!r})"
              " and constraints.txt: edit those, not this file.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([header, *lines]) + "\n")
    print(f"{args.out}: {len(lines)} requirements", file=sys.stderr)


if __name__ == "__main__":
    main()
