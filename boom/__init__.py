"""BOOM: the Benchmark of Observability Metrics, evaluated the way the published leaderboard does."""

import warnings

# GluonTS announces on import that it serialises with the `json` module when neither orjson nor ujson is installed
# (neither is a dependency: boom does not serialise through GluonTS). Filtered here, before any boom module imports
# GluonTS, so that every process prints nothing, the spawned workers of `boom eval --devices N` included (they
# import `boom.evaluate`, not `boom.cli`).
warnings.filterwarnings("ignore", message="Using `json`-module for json-handling", category=UserWarning,
                        module="gluonts.json")
