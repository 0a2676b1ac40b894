"""A job's life: stages and their phases, the guard, the ledger, the driver, the reconciler and outcomes.

Also the quarantine, where messages no stage would run are kept for an operator.
"""
