"""Hostile gRPC clients cannot take the server down: calls that never finish sending their
message hold a bounded amount of memory, and a burst of calls on one connection is served or
refused by nnserve (UNAVAILABLE, logged), never cancelled unseen inside grpc."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.server import Server, StartServer
from support.tools import require_module
from support.unfinished_grpc import UnfinishedCalls

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
GROWTH_BOUND_MB = 150
RECEIVING = 64  # NNSERVE_GRPC_MAX_RECEIVING_CALLS's default


@pytest.mark.slow
def test_400_unfinished_one_mb_calls_hold_bounded_memory(start_server: StartServer) -> None:
    """Each call sends all of a 1 MB message but its last byte and waits. Past
    NNSERVE_GRPC_MAX_RECEIVING_CALLS the server refuses calls before reading them, so what the
    others hold is that count times the message limit, whatever the client opens."""
    server = start_server(NNSERVE_GRPC_MAX_RECEIVING_CALLS=str(RECEIVING))
    before = server.status_kib()
    with UnfinishedCalls(("127.0.0.1", server.grpc_port), MODEL_INFER, 400, 1_000_000) as attack:
        attack.send()
        growth_mb = (server.status_kib() - before) / 1024
        with grpc.insecure_channel(server.grpc_address) as channel:  # probes have places of their own
            probe: Any = health_pb2_grpc.HealthStub(channel)  # typed without its calls
            health = probe.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    print(f"\n400 unfinished calls: RSS +{growth_mb:.0f} MB, {attack.sent / 1e6:.0f} MB sent")
    assert growth_mb <= GROWTH_BOUND_MB
    lines = [json.loads(line) for line in server.log().splitlines() if MODEL_INFER in line]
    refused = [line for line in lines if line.get("status") == "UNAVAILABLE"]
    # every call the server took beyond those receiving was refused, and logged
    assert len(refused) >= 400 - RECEIVING - attack.refused_streams


def test_a_connection_without_calls_is_closed_at_the_idle_limit(start_server: StartServer) -> None:
    """A client that connects and sends nothing does not hold its connection for ever."""
    server = start_server(NNSERVE_GRPC_IDLE_SECONDS="0.5")
    with UnfinishedCalls(("127.0.0.1", server.grpc_port), MODEL_INFER, 0, 0) as idle:
        assert idle.wait_for_goaway(10)


async def _burst(address: str, calls: int) -> Counter[grpc.StatusCode]:
    grpcclient = require_module("tritonclient.grpc")
    request = grpcclient.service_pb2.ModelInferRequest(model_name="wine")
    request.inputs.add(name="guests", datatype="FP32", shape=[1, 10])
    request.raw_input_contents.append(np.zeros((1, 10), "<f4").tobytes())
    payload = request.SerializeToString()
    async with aio.insecure_channel(address) as channel:
        infer: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(MODEL_INFER)

        async def one() -> grpc.StatusCode:
            try:
                await infer(payload, timeout=60)
            except aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        return Counter(await asyncio.gather(*(one() for _ in range(calls))))


@pytest.mark.slow
def test_2000_simultaneous_calls_on_one_connection_are_served_or_refused_by_nnserve(server: Server) -> None:
    """HTTP/2 lets one connection open NNSERVE_GRPC_MAX_STREAMS calls at once; the client
    queues the rest. None is cancelled inside grpc before nnserve sees it (grpc's pending-call
    limit did that to up to 39% of them); a call refused for load is UNAVAILABLE and logged."""
    codes = asyncio.run(_burst(server.grpc_address, 2000))
    print(f"\n2,000 calls on one connection: {dict(codes)}")
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    deadline = time.monotonic() + 30  # access lines trail the answers a moment
    while (answered := server.log().count(f"POST {MODEL_INFER} ")) < 2000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answered >= 2000
