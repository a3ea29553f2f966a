"""inference.GRPCInferenceService: each call is a few lines over the data plane and the
documents and tensor checks REST V2 uses, so the two protocols answer alike. What every call
shares (deadline, load shedding, request id, metrics, the access line and errors as statuses)
is service/grpc/guard.py's, around these methods."""

from __future__ import annotations

from google.protobuf import json_format
from grpc import aio

from service.admission.drain import draining
from service.admission.keys import check_admin_key, check_key
from service.dataplane import documents
from service.grpc import codec
from service.grpc import inference_pb2 as pb
from service.grpc.inference_pb2_grpc import GRPCInferenceServiceServicer
from service.models.traffic import TRAFFIC_KEY_HEADER
from service.nnserve import NNServe
from service.v2.codec import CARD_DATATYPES

Context = aio.ServicerContext[object, object]


def _metadata(context: Context, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return None


def _authorization(context: Context) -> str:
    return _metadata(context, "authorization") or ""


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, app: NNServe) -> None:
        self.app = app
        self.settings = app.settings

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        """Not ready while the server drains, as /v2/health/ready."""
        return pb.ServerReadyResponse(ready=self.app.dataplane.ready() and not draining.is_set())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return json_format.ParseDict(documents.server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        dataplane = self.app.dataplane
        model = dataplane.model(request.name, request.version or None, _metadata(context, TRAFFIC_KEY_HEADER))
        document = documents.model_metadata(dataplane, model)
        # The protocol's message has no `parameters` (REST's card kind): it is left out.
        return json_format.ParseDict(document, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        """Whether the model (version) serves: NOT_FOUND for one that does not exist, UNAVAILABLE
        for one that exists but failed to load, as inference would answer."""
        self.app.dataplane.model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        check_key(_authorization(context), self.settings)
        dataplane = self.app.dataplane
        # Without a version the traffic policy picks one, for the client's x-traffic-key if sent.
        key = _metadata(context, TRAFFIC_KEY_HEADER)
        model = dataplane.model(request.model_name, request.model_version or None, key)
        parsed = codec.decode_request(request, self.settings.max_batch_size)
        outputs = await dataplane.infer(model, documents.model_feeds(parsed, model))
        named = {
            spec.name: (array, CARD_DATATYPES[spec.dtype])
            for spec, array in zip(model.card.outputs, outputs, strict=True)
        }
        return codec.encode_response(request.model_name, model.version, parsed, named)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        check_admin_key(_authorization(context), self.settings)
        index = documents.repository_index(self.app.dataplane)
        models = [entry for entry in index if entry["state"] == "READY" or not request.ready]
        return json_format.ParseDict({"models": models}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        """(Re)loads every version of the model, built and warmed off the event loop."""
        check_admin_key(_authorization(context), self.settings)
        await self.app.dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        check_admin_key(_authorization(context), self.settings)
        await self.app.dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()
