"""The worker's own parts: its start-up, the heartbeat's consumer step, and the shield before its consumer."""
