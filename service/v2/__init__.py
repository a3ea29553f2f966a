"""The Open Inference Protocol's tensors (codec.py): JSON and binary tensor data, parsed and
encoded. Low in the house because a card's example request is written in it, so model loading
reads it too; the protocol's documents are the data plane's (service/dataplane/documents.py),
its REST routes the HTTP adapter's, its gRPC service the gRPC adapter's.

May import the card, features and the bottom (config, errors).
"""
