"""Build the service image from the Dockerfile with what this machine's pip installs from, where the defaults fail.

The Dockerfile's defaults (python:3.11-slim, PyTorch's CPU index, PyPI) need a registry and PyPI's and PyTorch's
servers. Where base images cannot be pulled, the image is built FROM the local Debian base image
(`tools/build_base_image.sh`, open-toto-base:bookworm) when it exists. Where PyTorch's index is not reachable, the
pinned CPU torch wheel is taken from a `find-links` folder of pip's configuration, and pip's configured `cert`
bundle (a proxy that intercepts TLS) is trusted in the build too: both are served to the build over a temporary
HTTP server on 127.0.0.1 (the build runs with `--network host` to reach it). Anything not found keeps the
Dockerfile's default, so the same call builds the ordinary image elsewhere.

    python -m tools.build_image [--tag open-toto-serve:cpu]     # what `make image` runs; prints the build log
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, NamedTuple

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TAG = "open-toto-serve:cpu"
LOCAL_BASE_IMAGE = "open-toto-base:bookworm"  # tools/build_base_image.sh
INDEX_URL = "https://pypi.org/simple"  # the Dockerfile's default index
# The files are served on a fixed port: the URLs are build arguments, and a changed argument misses Docker's cache.
FILES_PORT = 47813


class LocalSources(NamedTuple):
    """What the build takes from this machine instead of the Dockerfile's defaults (None: the default)."""

    base_image: str | None
    torch_wheel: Path | None
    ca_bundle: Path | None


def pip_config() -> dict[str, str]:
    """pip's configuration of this machine (files and PIP_* variables), as `pip config list` shows it."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings = {}
    for line in listing.stdout.splitlines():
        key, _, value = line.partition("=")
        settings[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    return settings


def pinned_torch_version() -> str:
    """The version constraints.txt pins torch to."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.split("==", 1)[1].split("#", 1)[0].strip()
    raise SystemExit("constraints.txt must pin torch (torch==X.Y.Z)")


def dockerfile_default(name: str) -> str:
    """The default value of the Dockerfile's `ARG name=value`."""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith(f"ARG {name}="):
            return line.split("=", 1)[1].strip()
    raise ValueError(f"the Dockerfile has no default for ARG {name}")


def base_image_problem(sources: LocalSources) -> str | None:
    """Why the base image the build would start FROM is not available here (None: it is, now pulled if needed).
    Without one, the build cannot say anything about the code: the container tests skip instead."""
    base = sources.base_image or dockerfile_default("BASE_IMAGE")
    if image_exists(base):
        return None
    pull = subprocess.run(["docker", "pull", base], capture_output=True, text=True, timeout=600)
    if pull.returncode == 0:
        return None
    reason = (pull.stderr or pull.stdout).strip().splitlines()
    return (f"the base image {base} cannot be pulled ({reason[-1] if reason else 'docker pull failed'}) and "
            f"{LOCAL_BASE_IMAGE} is not built: run bash tools/build_base_image.sh")


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def local_sources() -> LocalSources:
    config = pip_config()
    version = pinned_torch_version()
    wheels = [
        wheel
        for folder in config.get("find-links", "").split()
        for wheel in sorted(Path(folder).glob(f"torch-{version}+cpu-cp311-*.whl"))  # the base images' CPython
    ]
    cert = Path(config["cert"]) if config.get("cert") else None
    return LocalSources(
        base_image=LOCAL_BASE_IMAGE if image_exists(LOCAL_BASE_IMAGE) else None,
        torch_wheel=wheels[0] if wheels else None,
        ca_bundle=cert if cert and cert.is_file() else None,
    )


@contextlib.contextmanager
def serve_files(files: dict[str, Path]) -> Iterator[str]:
    """Serve `files` (name -> path) over HTTP on 127.0.0.1 while the block runs; yields the base URL."""
    with tempfile.TemporaryDirectory(prefix="open-toto-build-files-") as folder:
        for name, path in files.items():
            (Path(folder) / name).symlink_to(path.resolve())

        class QuietHandler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # the build log says what pip fetched
                pass

        handler = functools.partial(QuietHandler, directory=folder)
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", FILES_PORT), handler)
        except OSError:
            print(f"port {FILES_PORT} is taken: serving on another one, so Docker's cache is not reused",
                  file=sys.stderr)
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        with server:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                yield f"http://127.0.0.1:{server.server_address[1]}"
            finally:
                server.shutdown()


def build_image(tag: str = DEFAULT_TAG, log: IO[str] | None = None) -> float:
    """`docker build` of the CPU image with the local sources; returns the seconds it took. The build's output goes
    to `log` (default: stdout); a failed build raises with the command and the end of that output."""
    sources = local_sources()
    if problem := base_image_problem(sources):
        raise RuntimeError(problem)
    files = {}
    if sources.torch_wheel:
        files[sources.torch_wheel.name] = sources.torch_wheel
    if sources.ca_bundle:
        files["ca-bundle.pem"] = sources.ca_bundle
    with serve_files(files) as url:
        args = {"DEVICE": "cpu"}
        if sources.base_image:
            args["BASE_IMAGE"] = sources.base_image
        if sources.torch_wheel:  # torch from the wheel folder, its dependencies from the ordinary index
            args |= {"TORCH_INDEX_URL": INDEX_URL, "FIND_LINKS": f"{url}/"}
        if sources.ca_bundle:
            args["CA_BUNDLE_URL"] = f"{url}/ca-bundle.pem"
        command = ["docker", "build", "--network", "host", "--tag", tag]
        command += [part for name, value in args.items() for part in ("--build-arg", f"{name}={value}")]
        command.append(str(REPO))
        print(f"$ {shlex.join(command)}", file=log or sys.stdout, flush=True)
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        for line in process.stdout:
            (log or sys.stdout).write(line)
            tail = [*tail[-39:], line]
        if process.wait() != 0:
            raise RuntimeError(f"{shlex.join(command)} failed ({process.returncode}):\n{''.join(tail)}")
        return time.monotonic() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=DEFAULT_TAG, help="the image's tag")
    args = parser.parse_args(argv)
    try:
        seconds = build_image(args.tag)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    print(f"{args.tag} built in {seconds:.0f} s")


if __name__ == "__main__":
    main()
