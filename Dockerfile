# syntax=docker/dockerfile:1
# wbvae GPU image: a slim Python base, PyTorch's CUDA build from PyPI, the project and its
# default checkpoint installed (not editable) into /opt/venv, run as a non-root user.
#
#   docker build -t wbvae:0.1.0 .
#   docker run --gpus all -p 8000:8000 wbvae:0.1.0
#
# No CUDA base image: torch's Linux wheel on PyPI is the CUDA build, and its nvidia-* wheels
# (cuBLAS, cuDNN, NCCL, the CUDA runtime...) carry every CUDA library it loads. A CUDA base
# image would ship a second copy. The driver (libcuda) is the host's, mounted into the
# container by the NVIDIA Container Toolkit (docker --gpus, compose's device reservation, the
# Kubernetes device plugin); the host driver must support the CUDA release of those wheels.
# Size: 5.4 GB unpacked, 2.9 GB to download, measured by make image-check (docs/deployment.md, "Image size").
#
# tests/deploy/test_deploy.py replays this file's pip install and start commands in a fresh
# virtual environment, so keep them simple: one pip command per RUN, the start command as an
# exec-form CMD.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: a virtual environment with CUDA torch, then the project -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv
WORKDIR /src
# torch at the release requirements.lock pins (PyPI's wheel: the CUDA build) and its nvidia-* wheels
# (pinned by the lock's image section; about 4.7 GB of the 5 GB image) in a layer of their own, before the project's files: changing the
# code does not download them again.
COPY requirements.lock ./
RUN pip install -c requirements.lock torch
COPY pyproject.toml README.md ./
COPY app/ app/
COPY model/ model/
# Then the project with its serving dependencies only, at the versions requirements.lock pins (torch is
# already there, at its pin). No training code (model/training is removed first), no training extras
# (matplotlib, scikit-image, scipy), no test tools: this image serves, it does not train. The build
# fails when the default checkpoint did not land in site-packages.
RUN rm -rf model/training \
    && pip install -c requirements.lock ./ \
    && python -I -c "from model.corrector import DEFAULT_CHECKPOINT as c; assert c.is_file(), c; print(c)"

# ---- train: the build environment plus the training extras, for the Kubernetes training
# Job (deploy/k8s/training): docker build --target train -t wbvae-train:0.1.0 .
# The serving image (the default target, below) never carries these packages.
FROM build AS train
COPY model/training/ model/training/
RUN pip install -c requirements.lock "./[train]" \
    && groupadd --system --gid 10001 wbvae \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/wbvae wbvae
ENV XDG_CACHE_HOME=/tmp/cache \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
CMD ["python", "-m", "model.training.train", "--help"]

# ---- runtime: the same base, the virtual environment, nothing else ------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="wbvae" \
      org.opencontainers.image.description="White-balance correction over HTTP (FastAPI + PyTorch, CUDA)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# The user and its group, both 10001 (useradd --user-group would pick a system gid such as 999, leaving
# USER 10001:10001 a gid without a group entry); make image-check checks both exist.
RUN groupadd --system --gid 10001 wbvae \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/wbvae wbvae
COPY --from=build /opt/venv /opt/venv
# NVIDIA_DRIVER_CAPABILITIES: without "compute" the container toolkit mounts only the driver's
# management library (nvidia-smi), not libcuda; CUDA base images set it, this one must too.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    CUDA_CACHE_PATH=/tmp/cache/nv \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
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
# SIGTERM (the default stop signal) starts uvicorn's graceful shutdown (WBVAE_SHUTDOWN_GRACE_S).
CMD ["python", "-m", "app"]
