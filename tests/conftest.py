"""Test-session settings shared by every test module."""

import os

# The test models are tiny: one thread is faster than several on a small shared CPU, and subprocesses the tests
# start (CLI runs, servers) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

import torch  # noqa: E402

torch.set_num_threads(1)
