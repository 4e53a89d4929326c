"""A real local Prometheus server for tests and benchmarks: backfilled history, scrape targets, rules, restarts.

Why a real server rather than a fake of its HTTP API: what an exporter or a forecasting job depends on is
Prometheus' own behaviour (PromQL's lookback and step alignment, the scrape loop, staleness, rule evaluation, what
survives a restart), and a fake only has the behaviour its author thought of. The binaries are Debian's
`prometheus` package (`sudo apt-get install prometheus`, or `make prometheus`); `find_prometheus()` says whether they
are on PATH, and the tests skip without them (tests/prometheus_fixtures.py).

History is written as OpenMetrics text and turned into TSDB blocks with `promtool tsdb create-blocks-from openmetrics`
(`backfill`), before the server starts. Then `PrometheusServer` runs `prometheus` on a free port of 127.0.0.1 with its
configuration (scrape configs, rule files) written to a folder of its own:

    backfill([Backfill("temp", {"origin": "EWR"}, timestamps, values)], storage)
    with PrometheusServer(storage) as server:
        server.query_range('temp{origin="EWR"}', start, end, 300)

What was learned about promtool and Prometheus 2.42 (Debian bookworm's), checked against the real binaries:

- promtool 2.42 has no `--max-block-duration` (later versions added it): it always cuts 2-hour blocks, so 7 days of
  history make some 85 blocks. Prometheus loads them all at start-up and compacts them into larger ones in the
  background about a minute later; queries are served throughout.
- Blocks that overlap each other or the head (the backfilled last minutes and freshly scraped samples) need no flag:
  since 2.39 overlapping blocks are always allowed (`--storage.tsdb.allow-overlapping-blocks` is a hidden no-op), and
  queries merge blocks and head.
- The head refuses samples older than the newest block's end ("out of bounds"). History that ends in the future
  therefore makes Prometheus drop every scraped sample until that time has passed, so `backfill` refuses samples
  later than now unless asked (`allow_future=True`).
- Time retention counts back from the newest block's end, not from the wall clock: old history with nothing newer
  is kept. Blocks are only found at start-up and at the minute's block reload, so backfill before `start()` (or
  `restart()` after).
- Timestamps are read as float seconds and stored in whole milliseconds.
- A target added at start-up or by a reload is first scraped some 5 s later, whatever the scrape interval: the
  scrape manager takes discovered targets every 5 s (no flag changes it in 2.42). Wait for it with `wait_until`.
"""

from __future__ import annotations

import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
import numpy as np
import yaml

T = TypeVar("T")

INSTALL_HINT = "install Prometheus: `sudo apt-get install prometheus` (Debian/Ubuntu), or `make prometheus` as root"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
READY_TIMEOUT = 60.0  # seconds: start-up loads every block and replays the WAL, slow on a busy shared CPU
STOP_TIMEOUT = 30.0  # seconds: a clean shutdown writes the head's chunks; then it is killed
POLL_INTERVAL = 0.2  # seconds between two looks of `wait_until`


def find_prometheus() -> tuple[str, str] | None:
    """The paths of `prometheus` and `promtool` on PATH, or None when either is missing (then tests skip)."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        return None
    return prometheus, promtool


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays do not compare to one bool
class Backfill:
    """One series of history: its metric name, labels, Unix timestamps in seconds and values (NaN: no sample)."""

    name: str
    labels: Mapping[str, str]
    timestamps: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        # Checked here, so that a bad series fails where it was made rather than in promtool's parser.
        if not METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"not a Prometheus metric name: {self.name!r}")
        for label in self.labels:
            if not LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"not a label name of a series (or a reserved one): {label!r}")
        timestamps, values = np.asarray(self.timestamps), np.asarray(self.values, dtype=np.float64)
        if timestamps.ndim != 1 or timestamps.shape != values.shape:
            raise ValueError(f"{self.name}: timestamps {timestamps.shape} and values {values.shape} must be 1-D and "
                             "of one length")
        if not (np.issubdtype(timestamps.dtype, np.integer) or np.issubdtype(timestamps.dtype, np.floating)):
            raise TypeError(f"{self.name}: timestamps must be Unix seconds (int or float), not {timestamps.dtype}")
        object.__setattr__(self, "labels", dict(self.labels))  # a copy: the caller's mapping may change later
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "values", values)


def _escape_label_value(value: str) -> str:
    """A label value as the exposition formats quote it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    """repr() round-trips a float64 exactly; infinities are spelled as OpenMetrics spells them."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _series_lines(series: Backfill) -> list[str]:
    """The sample lines of one series, in time order (promtool appends them in file order), NaN values left out."""
    labels = ",".join(f'{key}="{_escape_label_value(str(series.labels[key]))}"' for key in sorted(series.labels))
    prefix = f"{series.name}{{{labels}}}" if labels else series.name
    keep = ~np.isnan(series.values)
    timestamps, values = series.timestamps[keep], series.values[keep]
    order = np.argsort(timestamps, kind="stable")
    timestamps, values = timestamps[order], values[order]
    if timestamps.size and np.any(np.diff(timestamps) == 0):
        raise ValueError(f"{prefix}: two samples at one timestamp")
    if np.issubdtype(timestamps.dtype, np.integer):
        stamps = [str(int(stamp)) for stamp in timestamps]
    else:
        if not np.all(np.isfinite(timestamps)):
            raise ValueError(f"{prefix}: timestamps must be finite")
        stamps = [repr(float(stamp)) for stamp in timestamps]
    return [f"{prefix} {_format_value(float(value))} {stamp}" for value, stamp in zip(values, stamps)]


def write_openmetrics(series: Iterable[Backfill], path: Path | str) -> Path:
    """Write `series` as OpenMetrics text for promtool's backfill: gauges, NaN values skipped, `# EOF` at the end.

    OpenMetrics wants all the samples of one metric family together after its one `# TYPE` line, so series are
    grouped by name (in the order names first appear); a series (name and labels) may appear only once.
    """
    families: dict[str, list[Backfill]] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for one in series:
        key = (one.name, tuple(sorted((name, str(value)) for name, value in one.labels.items())))
        if key in seen:
            raise ValueError(f"series given twice: {one.name}{dict(key[1])}")
        seen.add(key)
        families.setdefault(one.name, []).append(one)
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for name, members in families.items():
            out.write(f"# TYPE {name} gauge\n")
            for member in members:
                lines = _series_lines(member)
                if lines:
                    out.write("\n".join(lines) + "\n")
        out.write("# EOF\n")
    return path


def backfill(series: Iterable[Backfill], storage_dir: Path | str, *, promtool: str | None = None,
             allow_future: bool = False) -> list[Path]:
    """Turn `series` into TSDB blocks in `storage_dir` with promtool; returns the new block folders.

    Run it before the server starts (or restart it after): Prometheus looks for new blocks only then and at its
    minute's block reload. Samples later than now are refused unless `allow_future`: the head would then refuse every
    scraped sample until that time (module docstring).
    """
    series = list(series)
    if not allow_future:
        now = time.time()
        for one in series:
            stamps = one.timestamps[~np.isnan(one.values)]
            if stamps.size and float(stamps.max()) > now:
                raise ValueError(f"{one.name}{dict(one.labels)} has samples after now (up to {float(stamps.max())}, "
                                 f"now {now:.3f}): Prometheus would drop scraped samples until then")
    if promtool is None:
        found = find_prometheus()
        if found is None:
            raise FileNotFoundError(f"promtool is not on PATH: {INSTALL_HINT}")
        promtool = found[1]
    storage = Path(storage_dir)
    storage.mkdir(parents=True, exist_ok=True)
    before = {entry.name for entry in storage.iterdir()}
    with tempfile.TemporaryDirectory(prefix="prometheus-backfill-") as scratch:
        source = write_openmetrics(series, Path(scratch) / "backfill.om")
        command = [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source), str(storage)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"promtool backfill failed (exit {done.returncode}): {done.stderr.strip() or done.stdout}")
    return sorted(entry for entry in storage.iterdir() if entry.name not in before and entry.is_dir())


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now: bound to port 0, then released for the server to take (a short race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _kill(process: subprocess.Popen[bytes]) -> None:
    """The last resort of a server that was never stopped (garbage-collected, or the interpreter exiting)."""
    if process.poll() is None:
        process.kill()
        process.wait()


class PrometheusError(RuntimeError):
    """Prometheus answered a request with an error (a bad query, a config it refused) or could not be started."""


class PrometheusServer:
    """A `prometheus` process on 127.0.0.1 with its configuration written by this class; a context manager.

    The port is chosen at the first `start()` and kept: `restart()` brings the same server back on the same port and
    storage, as a real outage would. The configuration (global intervals, rule files, scrape configs) lives in its own
    folder (a temporary one by default, removed by `close()`), with the server's log, which errors quote.
    """

    def __init__(self, storage_dir: Path, scrape_configs: list[dict] | None = None,
                 rule_files: Mapping[str, str] | None = None, scrape_interval: str = "1s",
                 evaluation_interval: str = "1s", retention: str = "30d", *, config_dir: Path | None = None,
                 extra_args: Sequence[str] = (), prometheus: str | None = None) -> None:
        """`rule_files` maps file names to the YAML text of rule groups; `extra_args` go to `prometheus` as they are
        (feature flags, `--web.enable-admin-api`); `prometheus` is the binary (default: the one on PATH)."""
        self.storage_dir = Path(storage_dir)
        self.scrape_configs: list[dict] = list(scrape_configs or [])
        self.rule_files: dict[str, str] = {}
        self.set_rule_files(rule_files or {})
        self.scrape_interval, self.evaluation_interval, self.retention = scrape_interval, evaluation_interval, retention
        self.extra_args = list(extra_args)
        self._binary = prometheus
        self._own_config_dir = config_dir is None
        self._config_dir = None if config_dir is None else Path(config_dir)
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._log: IO[bytes] | None = None
        self._client: httpx.Client | None = None

    # -- life cycle --------------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started: no port yet")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_dir(self) -> Path:
        if self._config_dir is None:
            self._config_dir = Path(tempfile.mkdtemp(prefix="prometheus-config-"))
        return self._config_dir

    @property
    def config_file(self) -> Path:
        return self.config_dir / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        return self.config_dir / "prometheus.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = READY_TIMEOUT) -> PrometheusServer:
        """Start the server (on its earlier port if it had one) and wait until /-/ready answers 200."""
        if self.running:
            raise RuntimeError(f"the server at {self.url} is running already")
        binary = self._binary
        if binary is None:
            found = find_prometheus()
            if found is None:
                raise FileNotFoundError(f"prometheus is not on PATH: {INSTALL_HINT}")
            binary = found[0]
        if self._port is None:
            self._port = free_port()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        command = [binary, f"--config.file={self.config_file}", f"--storage.tsdb.path={self.storage_dir}",
                   f"--web.listen-address=127.0.0.1:{self._port}", f"--storage.tsdb.retention.time={self.retention}",
                   "--web.enable-lifecycle", *self.extra_args]
        self._log = self.log_file.open("ab")  # appended: after a restart the tail still shows the earlier run
        self._log.write(f"--- {' '.join(command)}\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self._finalizer = weakref.finalize(self, _kill, self._process)
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)  # no proxy for 127.0.0.1
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise PrometheusError(f"prometheus exited with {code} while starting:\n{self.log_tail()}")
            try:
                if self._client.get("/-/ready", timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusError(f"prometheus was not ready at {self.url} after {timeout:.0f} s:\n"
                                      f"{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout` seconds); the port and storage stay for a restart."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, timeout: float = READY_TIMEOUT) -> PrometheusServer:
        """Stop, then start again on the same port and storage: an outage that clients have to ride out."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server, close its HTTP client and remove the configuration folder if this class made it."""
        self.stop()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._own_config_dir and self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def log_tail(self, n: int = 40) -> str:
        """The last `n` lines of the server's log (both runs' after a restart), for error messages."""
        if self._config_dir is None or not self.log_file.exists():
            return "(no log)"
        if self._log is not None:
            self._log.flush()
        lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n:])

    # -- configuration -----------------------------------------------------------------------------------------------

    def set_scrape_configs(self, scrape_configs: list[dict]) -> None:
        """Replace the scrape configs; they take effect at `reload()` (or the next start)."""
        self.scrape_configs = list(scrape_configs)

    def set_rule_files(self, rule_files: Mapping[str, str]) -> None:
        """Replace the rule files (file name -> YAML text of rule groups); they take effect at `reload()`."""
        for name in rule_files:
            if Path(name).name != name or name in ("", ".", ".."):
                raise ValueError(f"a rule file's name must be a plain file name: {name!r}")
        self.rule_files = dict(rule_files)

    def write_config(self) -> Path:
        """Write prometheus.yml and the rule files into the configuration folder; returns prometheus.yml's path."""
        rules_dir = self.config_dir / "rules"
        shutil.rmtree(rules_dir, ignore_errors=True)  # files of an earlier set would linger
        rules_dir.mkdir()
        for name, text in self.rule_files.items():
            (rules_dir / name).write_text(text, encoding="utf-8")
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.evaluation_interval},
            "rule_files": [str(rules_dir / name) for name in self.rule_files],
            "scrape_configs": self.scrape_configs,
        }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return self.config_file

    def reload(self) -> None:
        """Write the configuration and have the running server load it (POST /-/reload, which answers once done)."""
        self.write_config()
        answer = self._http().post("/-/reload", timeout=30.0)
        if answer.status_code != 200:
            raise PrometheusError(f"reload refused ({answer.status_code}): {answer.text.strip()}")

    # -- HTTP API ----------------------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None or not self.running:
            raise RuntimeError(f"the server is not running:\n{self.log_tail()}")
        return self._client

    def api(self, path: str, data: Mapping[str, str] | None = None) -> Any:
        """The `data` of an /api/v1 answer (a POST when `data` is given), or PrometheusError with Prometheus' error."""
        client = self._http()
        answer = client.get(path) if data is None else client.post(path, data=dict(data))
        try:
            body = answer.json()
        except ValueError:
            raise PrometheusError(f"{path}: {answer.status_code} {answer.text[:500]}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(data or {})}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, time: float | None = None) -> list[dict]:
        """An instant query (at `time`, Unix seconds; default now): data.result, a list of {metric, value}."""
        data = {"query": promql}
        if time is not None:
            data["time"] = repr(float(time))
        return list(self.api("/api/v1/query", data)["result"])

    def query_range(self, promql: str, start: float, end: float, step: float | str) -> list[dict]:
        """A range query: data.result, a list of {metric, values} with values at start, start + step, ... <= end."""
        data = {"query": promql, "start": repr(float(start)), "end": repr(float(end)),
                "step": step if isinstance(step, str) else repr(float(step))}
        return list(self.api("/api/v1/query_range", data)["result"])

    def alerts(self) -> list[dict]:
        """The alerts of the alerting rules that are pending or firing now (/api/v1/alerts)."""
        return list(self.api("/api/v1/alerts")["alerts"])

    def targets(self) -> list[dict]:
        """The active scrape targets, with their health and last error (/api/v1/targets' activeTargets)."""
        return list(self.api("/api/v1/targets?state=active")["activeTargets"])

    def wait_until(self, predicate: Callable[[], T | None], timeout: float, what: str,
                   interval: float = POLL_INTERVAL) -> T:
        """Poll `predicate` until it returns something truthy, and return that; TimeoutError after `timeout` seconds.

        Scrapes and rule evaluations happen on Prometheus' clock, not the test's: a test waits for their effect
        with a deadline instead of sleeping a guessed time. If the server dies meanwhile, the wait ends at once,
        with its log.
        """
        deadline = time.monotonic() + timeout
        while True:
            last = predicate()
            if last:
                return last
            if self._process is not None and self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited while waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout} s; last value: {last!r}")
            time.sleep(interval)
