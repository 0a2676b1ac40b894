"""How a careful team configures raw Celery, shared by the benchmarks' raw apps (bench.raw_chain, bench.raw_orders):
acks late, a lost worker's message given back, prefetch 1, JSON."""

CAREFUL = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_serializer": "json",
    "accept_content": ["json"],
    "broker_connection_retry_on_startup": True,
    "worker_hijack_root_logger": False,
}
