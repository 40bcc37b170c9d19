# The lictel image for real deployments (docker-compose.yml): the core package at the pinned
# versions, no build tools, no embedded stack (a deployment talks to a Kafka cluster and a ClickHouse
# server), running as an unprivileged user. Base images are exact versions; docs/deploy.md says how
# to pin them by digest.

# The dashboard's chart library, from the npm registry, checked against web/package-lock.json.
FROM node:20.19.5-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM python:3.11.14-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LICTEL_DATA_DIR=/data LICTEL_METRICS_HOST=0.0.0.0 LICTEL_METRICS_PORT=9464 LICTEL_LOG_FORMAT=json
RUN groupadd --system --gid 10001 lictel \
    && useradd --system --uid 10001 --gid lictel --home-dir /data --shell /usr/sbin/nologin lictel \
    && mkdir -p /data && chown lictel:lictel /data
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
COPY lictel lictel
COPY producers producers
COPY streams streams
COPY sinks sinks
COPY schemas schemas
COPY --from=web /web/node_modules/echarts/dist/echarts.min.js /web/node_modules/echarts/LICENSE lictel/web/static/vendor/
RUN pip install -c requirements.lock . && rm -rf /root/.cache
USER lictel
VOLUME ["/data"]
# /metrics (Prometheus) and /healthz of the stream worker, sink and following producer.
EXPOSE 9464
# A component that answers /healthz with 200 is healthy (503: failing; no answer: down).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LICTEL_METRICS_PORT', '9464'), timeout=4)"]
ENTRYPOINT ["lictel"]
CMD ["--help"]
