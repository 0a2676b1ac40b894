FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY settings settings
COPY pipeline pipeline
COPY tasks tasks
COPY dlq dlq
COPY vetro vetro
# Flower runs from the same image (docker-compose.yml), so the image has the flower extra.
RUN pip install --no-cache-dir ".[flower]"
USER nobody
CMD ["python", "-m", "vetro.supervise", "celery", "-A", "pipeline", "worker", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
