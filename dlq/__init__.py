"""The dead-letter store: failed jobs in SQL, their replay, and `vetro dlq` / `vetro db`."""
