"""Offline training: PyTorch recipes that write versioned ONNX models and cards under models/."""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle worker threads sleep instead of spinning. On two cores shared
# with other processes, spinning threads starve each other (a training step measured 11x slower).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
