"""Benchmarks: plain scripts, each starting its own Redis and workers on loopback (see BENCHMARKS.md)."""
