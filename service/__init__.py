"""nnserve: the serving half. Never imports torch."""

__version__ = "0.1.0"
