FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY settings settings
COPY pipeline pipeline
COPY tasks tasks
COPY dlq dlq
COPY vetro vetro
RUN pip install --no-cache-dir .
USER nobody
CMD ["python", "-m", "vetro.supervise", "celery", "-A", "pipeline", "worker", "--loglevel", "INFO"]
