"""nnserve: the serving half. Never imports torch."""

import os

# onnxruntime (1.29 and newer) starts a telemetry uploader when it is imported unless this is set:
# it would send model details out of the serving network and, where it cannot persist its device
# id (a read-only filesystem), write a plain-text warning into the JSON log. Set before any
# module of the package imports onnxruntime; ORT_DISABLE_TELEMETRY=0 in the environment opts in.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
