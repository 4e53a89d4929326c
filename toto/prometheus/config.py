"""The exporter's YAML file, validated when it starts: a mistake is a one-line error naming the field, not a failure
at the first run an hour later. `examples/prometheus/exporter.yaml` is a complete example; docs/prometheus.md
explains each field.

    prometheus: {url: http://localhost:9090}
    rules:
      - name: api_requests
        query: sum by (instance) (rate(http_requests_total{job="api"}[5m]))
        step: 5m
        range: 7d
        horizons: [1h, 6h]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from toto.anomaly.detector import DetectionSettings
from toto.options import DEFAULT_MODEL
from toto.prometheus.client import Connection, format_duration, parse_duration
from toto.validation import InputError

# The exporter forecasts at most this far ahead: decoding is autoregressive, so a run's cost grows with the horizon.
MAX_HORIZON_STEPS = 1024
# Rule names become the `rule` label and part of log lines: Prometheus' label-value-friendly identifiers.
RULE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_:]*$")



def _seconds(value: Any) -> Any:
    """A Prometheus duration ('5m', '7d') or a number of seconds, as seconds; anything else is left to pydantic."""
    return parse_duration(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusSettings(_Strict):
    """The server the queries run against; credentials come from the environment (`toto.prometheus.client`)."""

    url: str
    timeout: Duration = 30.0
    retries: int = Field(3, ge=0, le=10)
    ca_file: str | None = None
    insecure_skip_verify: bool = False

    def connection(self) -> Connection:
        return Connection(self.url, timeout_s=self.timeout, retries=self.retries, ca_file=self.ca_file,
                          insecure_skip_verify=self.insecure_skip_verify)


class ModelSettings(_Strict):
    checkpoint: str = DEFAULT_MODEL
    device: str | None = None
    batch_size: int = Field(64, ge=1, le=4096)
    """Series forecast together."""


class Limits(_Strict):
    """Bounds that keep a mistaken query from taking the exporter down."""

    max_series_per_rule: int = Field(10_000, ge=1)
    max_range: Duration = 30 * 86400.0
    max_points_per_series: int = Field(100_000, ge=16)
    memory_budget_gib: float = Field(2.0, gt=0)
    """The anomaly scorer's cached state of all rules together; over it, the least recently updated series' caches
    are dropped and rebuilt when next needed (slower runs, never more memory)."""



class Rule(_Strict):
    """One query, forecast and scored every `interval`."""

    name: str
    query: str = Field(min_length=1)
    step: Duration = 300.0
    range: Duration = 7 * 86400.0
    """History read on the first run (afterwards only the new steps are read)."""
    interval: Duration | None = None
    """How often the rule runs (default: its step)."""
    band_levels: list[float] = Field(default_factory=lambda: [0.8, 0.98], min_length=1)
    horizons: list[Duration] = Field(default_factory=list)
    alerts_per_day: float = Field(DetectionSettings().alerts_per_day, gt=0)
    max_series: int = Field(1_000, ge=1)


    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not RULE_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid rule name: use letters, digits, _ and :, not starting with a"
                             " digit (e.g. api_requests)")
        return name

    @field_validator("band_levels")
    @classmethod
    def _levels(cls, levels: list[float]) -> list[float]:
        bad = [level for level in levels if not 0 < level < 1]
        if bad:
            raise ValueError(f"band levels are central probabilities strictly between 0 and 1 (e.g. 0.98), got {bad}")
        return sorted(set(levels))

    @model_validator(mode="after")
    def _steps(self) -> Rule:
        for horizon in self.horizons:
            if horizon % self.step:
                raise ValueError(f"horizon {format_duration(horizon)} is not a whole number of steps of"
                                 f" {format_duration(self.step)}")
            if horizon / self.step > MAX_HORIZON_STEPS:
                raise ValueError(f"horizon {format_duration(horizon)} is {horizon / self.step:.0f} steps, over the"
                                 f" {MAX_HORIZON_STEPS} the exporter forecasts: use a coarser step or a shorter"
                                 " horizon")
        if self.range < 16 * self.step:
            raise ValueError(f"range {format_duration(self.range)} holds fewer than 16 steps of"
                             f" {format_duration(self.step)}: the model needs history")
        return self

    @property
    def every(self) -> float:
        return self.interval or self.step

    @property
    def points(self) -> int:
        return int(self.range // self.step)

    def horizon_steps(self) -> list[int]:
        return [round(horizon / self.step) for horizon in self.horizons]

    def quantile_levels(self) -> list[float]:
        """The forecast's quantile levels: each band's two ends, and the median."""
        ends = {round((1 - level) / 2, 12) for level in self.band_levels} | {
            round((1 + level) / 2, 12) for level in self.band_levels}
        return sorted(ends | {0.5})


class Listen(_Strict):
    address: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)


class ExporterConfig(_Strict):
    prometheus: PrometheusSettings
    rules: list[Rule] = Field(min_length=1)
    listen: Listen = Field(default_factory=Listen)
    model: ModelSettings = Field(default_factory=ModelSettings)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _bounded(self) -> ExporterConfig:
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique; repeated: {repeated}")
        for rule in self.rules:
            if rule.range > self.limits.max_range:
                raise ValueError(f"rule {rule.name}: range {format_duration(rule.range)} is over limits.max_range"
                                 f" {format_duration(self.limits.max_range)}")
            if rule.points > self.limits.max_points_per_series:
                raise ValueError(f"rule {rule.name}: {rule.points:,} steps per series, over"
                                 f" limits.max_points_per_series {self.limits.max_points_per_series:,}: use a"
                                 " coarser step or a shorter range")
            if rule.max_series > self.limits.max_series_per_rule:
                raise ValueError(f"rule {rule.name}: max_series {rule.max_series:,} is over"
                                 f" limits.max_series_per_rule {self.limits.max_series_per_rule:,}")
        return self


def load_config(path: str | Path) -> ExporterConfig:
    """Read and validate the exporter's YAML file; every problem is an `InputError` naming the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise InputError(f"cannot read the exporter config {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise InputError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(raw, dict):
        raise InputError(f"{path} must be a mapping with prometheus: and rules: (see"
                         " examples/prometheus/exporter.yaml)")
    try:
        config = ExporterConfig.model_validate(raw)
        config.prometheus.connection()  # the URL and CA file checks
        return config
    except ValidationError as error:
        problems = "; ".join(f"{_where(problem['loc'])}: {_message(problem)}" for problem in error.errors())
        raise InputError(f"{path}: {problems}") from None


def _where(location: tuple[int | str, ...]) -> str:
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the file"


def _message(problem: Any) -> str:
    message = str(problem["msg"]).removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        return "not a known field (check its spelling)"
    if problem["type"] == "missing":
        return "required"
    return message
