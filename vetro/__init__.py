"""vetro put together: the `vetro` command, the demo and the chaos run, above every other layer."""
