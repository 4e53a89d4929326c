# The forecasting service (serve/) as an image; docs/serving.md ("Container") explains the settings.
#
#   docker build -t open-toto-serve .                                 # CPU (python:3.11-slim, PyTorch's CPU index)
#   docker build -t open-toto-serve:gpu --build-arg DEVICE=gpu .      # CUDA torch and the `gpu` extra
#   docker run -p 3000:3000 -e TOTO_SERVE_CHECKPOINT=toto-tiny open-toto-serve
#
# Where base images cannot be pulled and PyTorch's index is not reachable:
#   bash tools/build_base_image.sh          # open-toto-base:bookworm, from Debian's packages
#   make image                              # python -m tools.build_image: this Dockerfile with, in effect,
#   docker build --network host --build-arg BASE_IMAGE=open-toto-base:bookworm \
#       --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg FIND_LINKS=http://127.0.0.1:47813/ \
#       --build-arg CA_BUNDLE_URL=http://127.0.0.1:47813/ca-bundle.pem .
#   (the torch wheel of pip's find-links folder and pip's cert bundle, served on 127.0.0.1 during the build)
#
# The GPU image needs no CUDA base image: PyTorch's CUDA wheels bring the CUDA libraries as pip packages, and the
# driver comes from the host (`docker run --gpus all`, NVIDIA Container Toolkit).
# Works with BuildKit and with the legacy builder (one stage).

# Any Debian-like image with python3 >= 3.10 and its venv module.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# cpu or gpu: picks torch's build (its local version label, +cpu or +$CUDA_BUILD) and the extras installed.
ARG DEVICE=cpu
# The CUDA build of torch on the GPU image: one PyTorch publishes for the pinned version (cu126, cu128, cu130, ...).
ARG CUDA_BUILD=cu128
# Where torch and its dependencies come from; empty: PyTorch's index of that build.
ARG TORCH_INDEX_URL=
# The index of everything else.
ARG INDEX_URL=https://pypi.org/simple
# Optional extra wheel locations for pip (--find-links), e.g. a local torch wheel served over HTTP.
ARG FIND_LINKS=
# Optional URL of a PEM bundle for pip to trust while building, where a proxy intercepts TLS. It is removed from
# the venv's pip.conf once the packages are in (a public CA certificate, not a secret: lower layers keep it).
ARG CA_BUNDLE_URL=

ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN set -eu; \
    python3 -m venv "$VIRTUAL_ENV"; \
    if [ -n "$CA_BUNDLE_URL" ]; then \
      python3 -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], '/opt/build-ca.pem')" \
        "$CA_BUNDLE_URL"; \
      printf '[global]\ncert = /opt/build-ca.pem\n' > "$VIRTUAL_ENV/pip.conf"; \
    fi

WORKDIR /app
# torch first (the slowest layer, cached across code changes). constraints.txt pins its version; the pin gets the
# local label of the device's build (torch==X+cpu), so that no index can hand the CPU image a CUDA build.
COPY constraints.txt ./
RUN set -eu; \
    case "$DEVICE" in \
      cpu) build=cpu ;; \
      gpu) build=$CUDA_BUILD ;; \
      *) echo "DEVICE must be cpu or gpu, not '$DEVICE'" >&2; exit 1 ;; \
    esac; \
    sed -E "s/^(torch==[^+ #]+)/\1+$build/" constraints.txt > /opt/constraints.txt; \
    grep -q "^torch==.*+$build" /opt/constraints.txt \
      || { echo "constraints.txt must pin torch (torch==X.Y.Z)" >&2; exit 1; }; \
    pip install -c /opt/constraints.txt --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$build}" \
        ${FIND_LINKS:+--find-links "$FIND_LINKS"} torch; \
    python -c "import torch; print('torch', torch.__version__)"

# Then the dependencies of the package with its serving extra (and `gpu` on the CUDA image), from pyproject.toml
# alone, so that this layer is cached across code changes too (no package code is copied yet: the project installs
# as metadata only), under the same constraints.
COPY pyproject.toml README.md ./
RUN set -eu; \
    extras=serve; [ "$DEVICE" = gpu ] && extras=serve,gpu; \
    pip install -c /opt/constraints.txt --index-url "$INDEX_URL" ${FIND_LINKS:+--find-links "$FIND_LINKS"} \
        ".[$extras]"
# Last the code, over the metadata-only install, without touching the dependencies.
COPY toto ./toto
COPY serve ./serve
RUN pip install --no-deps --force-reinstall --index-url "$INDEX_URL" . \
    && rm -f "$VIRTUAL_ENV/pip.conf" /opt/build-ca.pem \
    && python -c "import serve.service"

RUN useradd --create-home --uid 10001 app
USER app
ENV BENTOML_HOME=/home/app/bentoml BENTOML_DO_NOT_TRACK=true TOTO_SERVE_CHECKPOINT=toto-tiny
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"
CMD ["bentoml", "serve", "serve.service:TotoService", "--host", "0.0.0.0", "--port", "3000"]
