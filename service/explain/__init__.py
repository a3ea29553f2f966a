"""Why a model answered as it did: one module per model kind (wine.py, spam.py, digit.py), each
taking a ServingModel and an encoded input and returning plain data, every network call going
through DataPlane.run (an explanation's variations are not client inferences: neither counted by
version nor shadowed).

May import the data plane and what it stands on; the adapters call it.
"""
