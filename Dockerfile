# The forecasting service (serve/) as an image; docs/serving.md explains the settings.
#
#   docker build -t open-toto-serve .                          # CPU
#   docker build -t open-toto-serve:gpu --build-arg DEVICE=gpu .   # CUDA base, CUDA torch and the `gpu` extra
#   docker run -p 3000:3000 -e TOTO_SERVE_CHECKPOINT=toto-tiny open-toto-serve
#
# The package is installed as the Makefile does: torch first, pinned by constraints.txt, then the package with the
# same constraints so pip can never swap torch for another build.
ARG DEVICE=cpu

FROM python:3.11-slim AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu EXTRAS=serve

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-gpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu128 EXTRAS=serve,gpu

FROM base-${DEVICE}
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN python3 -m venv "$VIRTUAL_ENV"

WORKDIR /app
# torch first (the slowest layer, cached across code changes), from the index of the chosen device.
COPY constraints.txt ./
RUN pip install -c constraints.txt --index-url "$TORCH_INDEX" torch
# Then the package with its serving extra (and `gpu` on the CUDA image), under the same constraints.
COPY pyproject.toml README.md ./
COPY toto ./toto
COPY serve ./serve
RUN pip install -c constraints.txt ".[${EXTRAS}]"

RUN useradd --create-home --uid 10001 app
USER app
ENV BENTOML_HOME=/home/app/bentoml BENTOML_DO_NOT_TRACK=true TOTO_SERVE_CHECKPOINT=toto-tiny
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"
CMD ["bentoml", "serve", "serve.service:TotoService", "--host", "0.0.0.0", "--port", "3000"]
