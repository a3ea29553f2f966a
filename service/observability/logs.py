"""Logging set-up: one line per event, JSON by default so log pipelines need no parsing rules."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


# Control characters as escapes: a client's text (a path with %0A in it, say) can never end a
# text line early and forge the next one. C1 controls and Unicode's line separators count too,
# since some viewers break lines at them.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


class TextFormatter(logging.Formatter):
    """NNSERVE_LOG_FORMAT=text: one line per event, as the JSON format's, whatever the message
    holds; a traceback is one line too, its line breaks written as \\n."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).translate(_ESCAPES)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)


def json_line(created: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
    entry = {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
        **fields,
    }
    return orjson.dumps(entry, default=str).decode()


class BufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic in typeshed only
    """Writes its lines in batches: at most `interval` seconds after a line arrived, or once
    `capacity` lines wait, and at exit (logging.shutdown flushes every handler, which a graceful
    stop runs). One line per request written with its own write() was about a fifth of a tiny
    model's serving cost; a batch is one write for hundreds of lines. A kill -9 loses at most the
    last `interval` of lines.

    The lines wait in a deque: append and popleft are atomic, so the request's path takes no lock
    and a flush takes exactly the lines it counted, while writers go on appending behind them."""

    def __init__(self, stream: TextIO, interval: float = 0.1, capacity: int = 512) -> None:
        super().__init__(stream)
        self.interval = interval
        self.capacity = capacity
        self._lines: deque[str] = deque()
        # Not `_closed`: logging.Handler.close() sets that attribute to True.
        self._stop_flushing = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name="log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add_line(line)

    def add_line(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self.capacity:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # set by Handler.createLock
            waiting = self._lines
            lines = [waiting.popleft() for _ in range(len(waiting))]
            if lines:
                self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def close(self) -> None:
        self._stop_flushing.set()
        if self._flusher is not threading.current_thread():
            self._flusher.join()
        self.flush()
        super().close()

    def _flush_periodically(self) -> None:
        while not self._stop_flushing.wait(self.interval):
            if self._lines:
                self.flush()


ACCESS = logging.getLogger("nnserve.access")


def log_access(message: str, fields: dict[str, Any]) -> None:
    """One access line. With the JSON format (the default) the line is built here and handed to
    the buffer directly: a LogRecord, the caller lookup and the generic formatter cost about
    10 us, a tenth of a small model's whole request. Other handlers get a record as usual."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    for handler in ACCESS.handlers:
        if isinstance(handler, BufferedHandler) and isinstance(handler.formatter, JsonFormatter):
            handler.add_line(json_line(time.time(), "info", ACCESS.name, message, fields))
        else:
            record = ACCESS.makeRecord(ACCESS.name, logging.INFO, "", 0, message, (), None, extra=fields)
            handler.handle(record)


def configure_logging(level: str, fmt: str) -> None:
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    for name in ("nnserve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # The access log, one line per request: batched (see BufferedHandler).
    for old in ACCESS.handlers:
        old.close()
    buffered = BufferedHandler(sys.stderr)
    buffered.setFormatter(formatter)
    ACCESS.handlers[:] = [buffered]
    ACCESS.setLevel(level.upper())
    ACCESS.propagate = False
