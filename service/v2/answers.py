"""The protocol's answers that are documents rather than tensors (server and model metadata, the
repository index), built once for both transports: REST V2 sends them as JSON, gRPC parses them
into its messages, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from service import __version__
from service.dataplane import DataPlane
from service.v2.codec import CARD_DATATYPES

EXTENSIONS = ["binary_tensor_data", "model_repository"]


def server_metadata() -> dict[str, Any]:
    return {"name": "nnserve", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(dataplane: DataPlane, name: str, version: str | None) -> dict[str, Any]:
    """The model's tensors, named and typed as the protocol spells them; 404 or 503 as for
    inference when the model (version) does not serve."""
    model = dataplane.model(name, version)
    return {
        "name": name,
        "versions": [str(v) for v in sorted(dataplane.entry(name).versions)],
        "platform": "onnxruntime_onnx",
        **{
            kind: [
                {"name": spec.name, "datatype": CARD_DATATYPES[spec.dtype], "shape": spec.shape}
                for spec in specs
            ]
            for kind, specs in (("inputs", model.card.inputs), ("outputs", model.card.outputs))
        },
    }


def repository_index(dataplane: DataPlane) -> list[dict[str, str]]:
    """Every model version and its state; a version that failed to load says why."""
    return [
        {
            "name": v.name,
            "version": str(v.version),
            "state": "READY" if v.ready else "UNAVAILABLE",
            "reason": v.error or "",
        }
        for v in dataplane.versions()
    ]
