"""Moved to `vetro.supervise`; `python -m pipeline.supervise ...`, as earlier Procfiles run it, still works."""

import runpy

if __name__ == "__main__":
    runpy.run_module("vetro.supervise", run_name="__main__", alter_sys=True)
