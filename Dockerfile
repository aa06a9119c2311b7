# The worker image: docker compose builds it for the `worker` service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker.py ./
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 desk
USER 10001
CMD ["escalation-worker"]
