"""Logging set-up: one line per event, JSON by default so log pipelines need no parsing rules.

Records are handed to a queue and formatted and written by a background thread, so the event
loop never waits on a write to stderr (one access line per request adds up on small models).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime

import orjson

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_listener: logging.handlers.QueueListener | None = None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Hands the record over as it is: formatting happens in the writer thread."""
        return record


def configure_logging(level: str, fmt: str) -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
    writer = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        writer.setFormatter(JsonFormatter())
    else:
        writer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    handler = _DeferredQueueHandler(records)
    for name in ("nnserve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


@atexit.register
def _flush() -> None:
    """Writes what is still queued before the process exits."""
    if _listener is not None:
        _listener.stop()
