# syntax=docker/dockerfile:1
# One image, two entry points: `shardkeeper operator` (the Deployment) and `shardkeeper agent` (the
# sidecar in each database pod). Build: docker build -t shardkeeper:0.2.0 .
# BASE: any Debian bookworm image with Python 3.11 and pip (hack/build-images.sh passes a local one
# made by mmdebstrap, for machines without a registry).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# A wheel per dependency, built once; the runtime stage installs them without a compiler or a cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[all]"

FROM ${BASE}
# The package version (a unit test keeps it equal to pyproject.toml).
ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="shardkeeper" \
      org.opencontainers.image.description="Backup and restore operator and agent for sharded stateful clusters" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "shardkeeper[all]==${VERSION}" \
    && rm -rf /wheels
# Non-root, matching the chart's securityContext (runAsUser 65532); the root filesystem may be
# read-only: Python writes no bytecode and temporary files go to /tmp (an emptyDir in the chart).
# USER: kopf names its peering identity after getpass.getuser(), which reads $USER before
# /etc/passwd; 65532 (or whatever runAsUser a pod sets) has no passwd entry, and without $USER the
# operator crashed at start (KeyError: 'getpwuid(): uid not found: 65532'), found by make cluster-e2e.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    USER=shardkeeper
USER 65532:65532
ENTRYPOINT ["shardkeeper"]
CMD ["operator"]
