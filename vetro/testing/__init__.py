"""What the demo, the tests and the benchmarks share: real Redis and Celery processes on one machine."""
