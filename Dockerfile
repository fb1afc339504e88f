# One image for every process: api, workers, beat, migrate, simulator (the command picks).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Metadata first: the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p campaigns workers schemas \
    && touch campaigns/__init__.py workers/__init__.py schemas/__init__.py \
    && pip install . \
    && pip uninstall -y wa-campaigns
COPY campaigns ./campaigns
COPY workers ./workers
COPY schemas ./schemas
RUN pip install --no-deps . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/uploads \
    && chown -R app:app /data

USER app
# DATA_DIR holds beat's schedule file; UPLOAD_DIR must be a volume shared by api and ingest workers.
# ENVIRONMENT=production: placeholder or short secrets stop every process at start (README
# "Deploying safely"). The API's /metrics listens on METRICS_PORT, not on 8000.
ENV DATA_DIR=/data \
    UPLOAD_DIR=/data/uploads \
    ENVIRONMENT=production \
    LOG_JSON=true \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100
EXPOSE 8000 9100
CMD ["wa-campaigns", "serve", "--host", "0.0.0.0", "--port", "8000"]
