# The lictel image for real deployments (docker-compose.yml). Pinned dependencies, no build tools.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.lock
COPY lictel lictel
COPY producers producers
COPY streams streams
COPY sinks sinks
COPY schemas schemas
RUN pip install --no-cache-dir --no-deps .
ENTRYPOINT ["lictel"]
