"""What every part records: counters, log lines, traces, Sentry events, worker heartbeats."""
