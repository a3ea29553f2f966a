"""The model lifecycle: what a version folder holds, loaded and served.

loading.py turns a version folder (card and graph, or a drop-in graph alone) into a ServingModel
with its onnxruntime session, checked and warmed up; repository.py keeps every model's versions
behind one lock; runner.py queues a version's requests and runs them in micro-batches off the
event loop; traffic.py and shadow.py are the canary and shadow policy; hidden.py the contract of
the wine network's hidden-layer graph.

May import: the V2 tensor codec, the card, features, observability, admission, config, errors
and the deadline; never the data plane or an adapter.
"""
