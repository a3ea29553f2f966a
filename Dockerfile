# nnserve: the service alone (no torch, no training extra) with the committed models.
# tests/test_docker.py builds and runs it; tests/test_deploy.py lints it and reads its instructions.

# The base image of both stages. Without access to a registry that has it, pass a mirror's copy
# or a stand-in: deploy/local-images.sh makes one from Debian packages.
ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: install into a virtual environment that the runtime stage copies whole, so no
# build leftovers reach the image.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The runtime packages at the versions and hashes of requirements.lock (make lock), in a layer
# of their own that a code change does not rebuild; pip's cache is a BuildKit cache mount:
# rebuilds reuse the downloads, the image never holds them.
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --no-deps .

# Runtime stage: slim Python, the venv, the models (owned by root, so read-only to the service),
# and a numeric non-root user that Kubernetes' runAsNonRoot can verify.
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 nnserve && useradd --no-create-home --uid 10001 --gid 10001 nnserve
COPY --from=build /opt/venv /opt/venv
COPY models /app/models
WORKDIR /app
# Every other setting (limits, threads, API keys) is an NNSERVE_* variable too: see service/config/__init__.py.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NNSERVE_HOST=0.0.0.0 \
    NNSERVE_PORT=8000 \
    NNSERVE_GRPC_PORT=8081 \
    NNSERVE_WORKERS=1 \
    NNSERVE_MODELS_DIR=/app/models
USER 10001:10001
# REST, and gRPC (the Open Inference Protocol).
EXPOSE 8000 8081
# The slim image has no curl: Python's urllib asks /ready (a non-2xx answer raises, so the check fails).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('NNSERVE_PORT', '8000') + '/ready', timeout=2)"]
CMD ["nnserve"]
