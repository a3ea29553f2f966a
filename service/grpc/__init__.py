"""The Open Inference Protocol over gRPC (KServe's `inference.GRPCInferenceService`, as Triton
serves it), on the REST app's event loop and data plane.

inference.proto is the protocol; inference_pb2*.py are generated from it and committed (`make
grpc-stubs`; the README says why). The test process never imports them: tritonclient.grpc
registers the same message names in protobuf's default pool, and a second definition of
`inference.ModelInferRequest` in one process is refused (tests/conftest.py turns gRPC off in
process; real servers get a port of their own).
"""
