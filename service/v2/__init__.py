"""The Open Inference Protocol (V2): routes, the tensor codec, and its OpenAPI documentation."""
