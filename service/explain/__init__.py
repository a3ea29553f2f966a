"""Why a model answered as it did: one module per model kind (wine.py, spam.py, digit.py), each
taking a ServingModel and an encoded input and returning plain data, every network call going
through DataPlane.run (an explanation's variations are not client inferences: neither counted by
version nor shadowed). hidden.py is the card's contract for the wine network's hidden-layer
graph, which training writes and loading reads.

Nothing is imported here, so service.loading can import hidden.py without importing the
explanation modules (which import service.loading).
"""
