# syntax=docker/dockerfile:1
# wbvae GPU image: CUDA runtime base, a CUDA build of PyTorch, the project and its
# default checkpoint installed (not editable) into /opt/venv, run as a non-root user.
#
#   docker build -t wbvae:0.1.0 .
#   docker run --gpus all -p 8000:8000 wbvae:0.1.0
#
# tests/test_deploy.py replays this file's pip install and start commands in a fresh
# virtual environment (the CUDA index replaced by the plain pin), so keep them simple:
# one pip command per RUN, the start command as an exec-form CMD.

ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04

# ---- build: a virtual environment with CUDA torch, then the project -----------------
FROM ${CUDA_IMAGE} AS build
# Same release as pyproject's pin (torch==2.13.*), the CUDA 13.0 build.
ARG TORCH_VERSION=2.13.*
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Python comes from the base's Ubuntu release; its security updates follow the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv
WORKDIR /src
# CUDA torch first: the project's own "torch==2.13.*" requirement is then already met,
# so the next install keeps this build instead of fetching the CPU wheel.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md constraints.txt ./
COPY app/ app/
COPY model/ model/
# Then the project with its serving dependencies only, at the versions constraints.txt pins
# (torch excepted: pinned above). No training extras (matplotlib, scikit-image, scipy): this
# image serves, it does not train. The build fails when the default checkpoint did not land
# in site-packages.
RUN pip install -c constraints.txt ./ \
    && python -I -c "from model.corrector import DEFAULT_CHECKPOINT as c; assert c.is_file(), c; print(c)"

# ---- train: the build environment plus the training extras, for the Kubernetes training
# Job (deploy/k8s/training): docker build --target train -t wbvae-train:0.1.0 .
# The serving image (the default target, below) never carries these packages.
FROM build AS train
RUN pip install -c constraints.txt "./[train]"
ENV XDG_CACHE_HOME=/tmp/cache \
    PYTHONUNBUFFERED=1
USER 10001:10001
CMD ["python", "-m", "model.training.train", "--help"]

# ---- runtime: the same base, Python, the virtual environment, nothing else ----------
FROM ${CUDA_IMAGE} AS runtime
ARG CUDA_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="wbvae" \
      org.opencontainers.image.description="White-balance correction over HTTP (FastAPI + PyTorch, CUDA)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${CUDA_IMAGE}"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/wbvae wbvae
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    CUDA_CACHE_PATH=/tmp/cache/nv \
    WBVAE_HOST=0.0.0.0 \
    WBVAE_PORT=8000 \
    WBVAE_DEVICE=auto
# Caches go to /tmp: compose and Kubernetes run the container with a read-only root
# filesystem and a writable /tmp. An empty working directory: `python -m app` imports
# the installed package, not a checkout.
WORKDIR /home/wbvae
USER 10001:10001
EXPOSE 8000
# Liveness with the image's own Python (no curl). /livez answers once the checkpoint is
# loaded (the lifespan loads it before serving); the start period covers CUDA
# initialisation and model loading on a cold GPU.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('WBVAE_PORT', '8000'), timeout=4)"]
# One uvicorn process per container (no --workers): every process would hold its own
# CUDA context (hundreds of MB of GPU memory before any weights) and its own copy of the
# model, and the per-process concurrency limit (WBVAE_MAX_CONCURRENT_CORRECTIONS) would no
# longer bound the work on the GPU. Scale out with replicas, one GPU each.
# SIGTERM (the default stop signal) starts uvicorn's graceful shutdown (30 s).
CMD ["python", "-m", "app"]
