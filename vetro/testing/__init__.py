"""What the demo, the tests and the benchmarks share, and teams' tests of their own pipelines: real Redis and
Celery processes on one machine (`processes`), a pytest plugin (`plugin`), and helpers to read a job."""

from vetro.testing.jobs import job_timeline, wait_for_job

__all__ = ["job_timeline", "wait_for_job"]
