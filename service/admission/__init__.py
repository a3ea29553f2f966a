"""Who and what gets in, for every protocol alike: API keys (keys.py), the in-flight and
body-byte budgets that shed load with 503 + Retry-After (budgets.py), and the drain that SIGTERM
starts (drain.py).

May import config, errors and the deadline only: the REST guard and the gRPC guard sit above it.
"""
