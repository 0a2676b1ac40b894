"""What operators read: health, and the counts, log context and traces recorded around every task."""
