"""Every request's id: the client's X-Request-ID if it is printable ASCII of a sane length (so a
client can follow its call through our logs), else a new one."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

HEADER = b"x-request-id"
_MAX_LENGTH = 128
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count()


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A new id is a random per-process prefix and a counter: unique without a random-number
    syscall per request."""
    for name, value in headers:
        if name == HEADER and 0 < len(value) <= _MAX_LENGTH and value.isascii():
            if all(32 < c < 127 for c in value):
                return bytes(value)
    return f"{_PREFIX}{next(_COUNTER):016x}".encode()
