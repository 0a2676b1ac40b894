"""The dead-letter store, replay and its management command (to come: see the README's roadmap)."""
