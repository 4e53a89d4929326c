"""How close the service's time estimate at admission comes to the time requests take.

    .venv/bin/python benchmarks/bench_serve_estimate.py [--checkpoint toto-tiny]

The service (in this process, default limits, a long timeout so that nothing is refused) measures its throughput at
start-up (`ForecastService._measure_throughput`: `CALIBRATION_STEPS` patches ahead, more series per pass until one
takes `CALIBRATION_S`), and estimates a request's seconds as its tokens (`ForecastEngine.request_work`) over that
throughput. Two calibrations are compared in one run: the service's, and 2 patches ahead over passes of at least a
second (more series per pass, so more tokens a decoding step, like the large requests). Then requests of weekly CO2
stretches (context 4096) from one variate to the largest the default limits allow are sent one after the other, each
with its estimate under both calibrations and the seconds it took. A ratio (seconds taken over estimate) below 1 means
the estimate errs long (a request near the timeout refused though it could finish), above 1 short (a request admitted
that then runs into the timeout). Results go to docs/benchmarks.md ("serve-estimate").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # run as a script: benchmarks.*, and the tests' in-process service

from serve_fixtures import LIMITS, co2_weekly, serve_in_process, service_settings, values  # noqa: E402

import serve.service as service_module  # noqa: E402
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from serve.schemas import ForecastRequest  # noqa: E402
from serve.settings import ServeSettings  # noqa: E402

# (variates, horizon) of one series with context 4096 and 256 samples: from small to the largest the limits allow.
SHAPES = [(1, 64), (16, 256), (64, 64), (4, 1024), (64, 256), (64, 1024)]
CALIBRATIONS = {"service's (16 patches ahead, 0.25 s passes)": (service_module.CALIBRATION_STEPS,
                                                                 service_module.CALIBRATION_S),
                "2 patches ahead, 1 s passes": (2, 1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="toto-tiny")
    args = parser.parse_args()
    defaults = {name: ServeSettings.model_fields[name].default for name in LIMITS}  # the tests shrink them
    settings = service_settings(args.checkpoint, **defaults, timeout_s=3600, device="cpu")
    context = values(co2_weekly().iloc[-4096:])
    rates: dict[str, float] = {}
    rows = []
    for label, (steps, seconds) in CALIBRATIONS.items():
        service_module.CALIBRATION_STEPS, service_module.CALIBRATION_S = steps, seconds
        with serve_in_process(settings) as served:
            assert served.service.tokens_per_second is not None, served.service.load_error
            rates[label] = served.service.tokens_per_second
            print(f"calibration {label}: {rates[label]:,.0f} tokens/s", flush=True)
            if len(rates) < len(CALIBRATIONS):
                continue
            for variates, horizon in SHAPES:
                body = {"series": [{"variates": {f"v{i}": context for i in range(variates)}}],
                        "prediction_length": horizon, "num_samples": 256}
                assert served.service.engine is not None
                tokens = served.service.engine.request_work(ForecastRequest.model_validate(body))
                started = time.perf_counter()
                status = served.client.post("/forecast", json=body).status_code
                taken = time.perf_counter() - started
                estimates = [tokens / rate for rate in rates.values()]
                print(f"{variates} x {horizon}: {status}, {tokens:,} tokens, {taken:.1f} s", flush=True)
                rows.append([f"1 x {variates} x 4096, horizon {horizon}", status, f"{tokens:,}", f"{taken:.1f}",
                             *(f"{estimate:.1f} ({taken / estimate:.2f})" for estimate in estimates)])
    markdown = (
        "## Forecasting service: estimated and taken time\n\n"
        f"Command: `{command_line()}`, {time.strftime('%Y-%m-%d')}, checkpoint `{args.checkpoint}`, default limits,"
        " in process on the CPU, 256 samples. Start-up throughput: "
        + "; ".join(f"{label}: {rate:,.0f} tokens/s" for label, rate in rates.items()) + ".\n\n"
        + markdown_table(["request", "status", "tokens", "seconds taken",
                          *(f"estimate s (taken / estimate), {label}" for label in rates)], rows)
    )
    print(markdown)
    write_section("serve-estimate", markdown)


if __name__ == "__main__":
    main()
