"""What REST V2 and gRPC share beyond the tensor codec: the protocol's documents (server and
model metadata, the repository index), which REST sends as JSON and gRPC parses into its
messages, and a request's tensors checked against the model, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

import numpy as np

from service import __version__
from service.dataplane import DataPlane
from service.errors import BadRequest
from service.features import FeatureError, TokenIds
from service.models.loading import ServingModel
from service.v2.codec import CARD_DATATYPES, InferRequest, feeds_for

EXTENSIONS = ["binary_tensor_data", "model_repository"]


def server_metadata() -> dict[str, Any]:
    return {"name": "nnserve", "version": __version__, "extensions": EXTENSIONS}


def model_metadata(dataplane: DataPlane, model: ServingModel) -> dict[str, Any]:
    """The model's tensors, named and typed as the protocol spells them; `parameters.card` says
    whether a card describes it (`none`: a drop-in model, described by its graph alone)."""
    described = dataplane.describe(model)
    return {
        "name": model.name,
        "versions": [str(v) for v in described.versions],
        "platform": "onnxruntime_onnx",
        **{
            kind: [
                {"name": spec.name, "datatype": CARD_DATATYPES[spec.dtype], "shape": spec.shape}
                for spec in specs
            ]
            for kind, specs in (("inputs", described.inputs), ("outputs", described.outputs))
        },
        "parameters": described.parameters(),
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


def model_feeds(request: InferRequest, model: ServingModel) -> dict[str, np.ndarray]:
    """The request's tensors checked against the model's inputs, token ids against its
    vocabulary too."""
    feeds = feeds_for(request, model.card.inputs)
    if isinstance(model.encoder, TokenIds):
        try:
            model.encoder.check(feeds)
        except FeatureError as exc:
            raise BadRequest(str(exc)) from exc
    return feeds
