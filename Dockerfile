# syntax=docker/dockerfile:1
# One image, two entry points: `shardkeeper operator` (the Deployment) and `shardkeeper agent` (the
# sidecar in each database pod). Build: docker build -t shardkeeper:0.2.0 .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# A wheel per dependency, built once; the runtime stage installs them without a compiler or a cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[all]"

FROM python:3.11-slim-bookworm
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
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["shardkeeper"]
CMD ["operator"]
