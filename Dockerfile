# nnserve: the service alone (no torch, no training extra) with the committed models.
# Build stage: install into a virtual environment that the runtime stage copies whole.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir .

# Runtime stage: slim Python, the venv, the models, a non-root user.
FROM python:3.11-slim
RUN groupadd --gid 10001 nnserve && useradd --create-home --uid 10001 --gid 10001 nnserve
COPY --from=build /opt/venv /opt/venv
COPY models /app/models
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NNSERVE_HOST=0.0.0.0 \
    NNSERVE_PORT=8000 \
    NNSERVE_WORKERS=1 \
    NNSERVE_MODELS_DIR=/app/models
USER 10001:10001
EXPOSE 8000
# The slim image has no curl: Python's urllib asks /ready (non-2xx raises, so the check fails).
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('NNSERVE_PORT', '8000') + '/ready', timeout=2)"]
CMD ["nnserve"]
