# syntax=docker/dockerfile:1
# opencti-defender-reconciler: two stages. "build" installs the locked dependencies
# (requirements.lock, hash-checked) and the package into a virtualenv;
# the final stage copies only that virtualenv onto a clean slim base, runs as a non-root user
# and starts the controller. No HEALTHCHECK: Kubernetes probes /healthz and /readyz instead.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, from the lock: every version pinned and every file's sha256 checked
# (pip refuses anything else). Every dependency ships a wheel: no compiler needed. This layer
# stays cached until requirements.lock changes.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
# Optional: the pycti release matching your OpenCTI platform's version (e.g. 7.260917.0).
# Empty keeps the locked, tested one. An override, and the versions of its own dependencies it
# pins differently, are not hash-checked (pip check still runs).
ARG PYCTI_VERSION=""
RUN if [ -n "${PYCTI_VERSION}" ]; then \
        /opt/venv/bin/pip install --no-cache-dir "pycti==${PYCTI_VERSION}"; \
    fi
# Then the package alone (its metadata names README.md, so that file is needed too): no
# dependency comes from pyproject.toml, and pip check fails the build if the lock does not
# satisfy it. pip itself is removed afterwards: nothing installs at run time.
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -m pip check \
    && /opt/venv/bin/python -m pip uninstall --yes pip \
    && /opt/venv/bin/reconciler --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="opencti-defender-reconciler" \
      org.opencontainers.image.description="Keeps Microsoft Defender for Endpoint custom indicators equal to what OpenCTI says." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="opencti-defender-reconciler"
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd;
# HOME is /tmp, the one writable place under a read-only root filesystem (an emptyDir in the pod).
RUN groupadd --system --gid 10001 reconciler \
    && useradd --system --uid 10001 --gid reconciler --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin reconciler
COPY --from=build /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
# reconciler.http_port (metrics, /healthz, /readyz).
EXPOSE 9095
ENTRYPOINT ["reconciler"]
CMD ["run"]
