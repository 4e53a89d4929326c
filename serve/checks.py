"""Checks that need the server's configuration: request limits, then whether timestamps can be continued.

A request can be well formed and still unprocessable here: a horizon beyond `max_prediction_length`, more samples
than `max_num_samples`, timestamps off their grid or beyond the year 9999. `find_problems` lists every such problem with
the field it concerns, and `/forecast` answers them with a 422 before any work is queued. A request whose memory
cost can never fit the budget is answered 413 (`over_budget`), and so is one whose estimated time passes the
timeout (`over_time`).
"""

from __future__ import annotations

from dataclasses import dataclass

from serve.schemas import DetectRequest, ForecastRequest, TimestampError
from serve.settings import ServeSettings


@dataclass(frozen=True)
class Problem:
    """Why one field of a request cannot be served; `limit` names the setting when a limit is exceeded."""

    loc: tuple[str | int, ...]
    msg: str
    limit: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"loc": list(self.loc), "msg": self.msg, **({"limit": self.limit} if self.limit is not None else {})}


def env_var(settings: ServeSettings, setting: str) -> str:
    """The environment variable that sets `setting`."""
    return f"{settings.model_config['env_prefix']}{setting.upper()}"


def _over(loc: tuple[str | int, ...], what: str, value: int, settings: ServeSettings, setting: str) -> Problem:
    limit = getattr(settings, setting)
    return Problem(loc, f"{what} is {value}, over this server's limit {setting}={limit} (set by "
                        f"{env_var(settings, setting)})", limit)


def over_budget(cost_bytes: int, settings: ServeSettings) -> Problem:
    """A request whose cost can never fit the memory budget (answered 413)."""
    budget = settings.memory_budget_bytes
    return Problem(("body",), f"this request needs {cost_bytes} bytes ({cost_bytes / 2**20:,.1f} MiB) of memory "
                   f"(its answer and its largest forward pass), over this server's memory budget "
                   f"memory_budget_bytes={budget} ({budget / 2**20:,.1f} "
                   f"MiB, set by {env_var(settings, 'memory_budget_bytes')}): send fewer series, variates or "
                   "samples, a shorter context or horizon, no samples back, or raise the budget", budget)


def over_time(tokens: int, tokens_per_second: float, settings: ServeSettings) -> Problem:
    """A request whose estimated time passes the timeout (answered 413)."""
    seconds = tokens / tokens_per_second
    source = "set by" if settings.tokens_per_second is not None else "measured at start-up; set it with"
    return Problem(("body",), f"this request needs an estimated {seconds:,.0f} s of forward passes ({tokens:,} "
                   f"tokens at this server's {tokens_per_second:,.0f} tokens/s, {source} "
                   f"{env_var(settings, 'tokens_per_second')}), over its timeout timeout_s={settings.timeout_s} "
                   f"(set by {env_var(settings, 'timeout_s')}): send fewer series, variates or samples, a shorter "
                   "horizon, or raise the timeout", settings.timeout_s)


def limit_problems(request: ForecastRequest, settings: ServeSettings) -> list[Problem]:
    """Every configured limit the request exceeds."""
    problems = []
    if len(request.series) > settings.max_series:
        problems.append(_over(("series",), "the number of series", len(request.series), settings, "max_series"))
    if request.prediction_length > settings.max_prediction_length:
        problems.append(_over(("prediction_length",), "prediction_length", request.prediction_length, settings,
                              "max_prediction_length"))
    if request.num_samples is not None and request.num_samples > settings.max_num_samples:
        problems.append(_over(("num_samples",), "num_samples", request.num_samples, settings, "max_num_samples"))
    if len(request.quantile_levels) > settings.max_quantile_levels:
        problems.append(_over(("quantile_levels",), "the number of quantile levels", len(request.quantile_levels),
                              settings, "max_quantile_levels"))
    for i, series in enumerate(request.series):
        if series.length > settings.max_context_length:
            problems.append(_over(("series", i, "variates"), f"series {i}'s context length", series.length, settings,
                                  "max_context_length"))
        width = len(series.variates) + len(series.exogenous)
        if width > settings.max_variates:
            problems.append(_over(("series", i, "variates"), f"series {i}'s number of variates (with exogenous)",
                                  width, settings, "max_variates"))
    return problems


def find_problems(request: ForecastRequest, settings: ServeSettings) -> list[Problem]:
    """Limit problems; when there are none (so sizes are bounded), timestamps that cannot be placed on a regular
    grid or continued, and grids (gaps filled in) longer than the context limit."""
    if problems := limit_problems(request, settings):
        return problems
    for i, series in enumerate(request.series):
        loc = ("series", i, "timestamps" if series.timestamps else "freq")
        try:
            grid = series.time_grid()
            series.future_timestamps(grid, request.prediction_length)
        except TimestampError as error:
            problems.append(Problem(loc, str(error)))
            continue
        if grid is not None and len(grid) > settings.max_context_length:
            problems.append(_over(loc, f"series {i}'s context length with its gaps filled in", len(grid), settings,
                                  "max_context_length"))
    return problems


def detect_problems(request: DetectRequest, settings: ServeSettings) -> list[Problem]:
    """What a /detect request asks beyond this server's limits, and an alert budget per day without a clock."""
    problems = []
    if len(request.series) > settings.max_series:
        problems.append(_over(("series",), "the number of series", len(request.series), settings, "max_series"))
    for i, series in enumerate(request.series):
        if series.length > settings.max_detect_length:
            problems.append(_over(("series", i, "variates"), f"series {i}'s length", series.length, settings,
                                  "max_detect_length"))
        if len(series.variates) > settings.max_variates:
            problems.append(_over(("series", i, "variates"), f"series {i}'s number of variates",
                                  len(series.variates), settings, "max_variates"))
        if request.false_alarm_rate is None and series.timestamps is None and series.start is None:
            problems.append(Problem(("series", i, "timestamps"), "an alert budget per day needs the series' time: "
                                    "send timestamps (or start and freq), or give false_alarm_rate instead"))
    return problems
