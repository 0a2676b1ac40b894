"""The operator console and its JSON API, served by `vetro serve` beside /metrics and /health."""
