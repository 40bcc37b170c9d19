# The lictel image for real deployments (docker-compose.yml). Pinned dependencies, no build tools.
# The dashboard's chart library, from the npm registry, checked against web/package-lock.json.
FROM node:20-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
COPY lictel lictel
COPY producers producers
COPY streams streams
COPY sinks sinks
COPY schemas schemas
COPY --from=web /web/node_modules/echarts/dist/echarts.min.js /web/node_modules/echarts/LICENSE lictel/web/static/vendor/
# The core package at the pinned versions, without the embedded extra (chDB, Tansu): a deployment
# talks to a Kafka cluster and a ClickHouse server.
RUN pip install --no-cache-dir -c requirements.lock .
ENTRYPOINT ["lictel"]
