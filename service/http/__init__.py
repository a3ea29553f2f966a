"""The REST adapter: everything that knows about HTTP.

A request meets guard/ first (deadline, shedding, body budget, request id, access record), then
hotpath.py (the prediction, explanation and V2 infer paths below FastAPI's router) or FastAPI's
routes (routes/: predict.py, explain.py, ops.py, v2.py), which parse bodies (body.py, schemas.py,
pixel_body.py), ask the data plane and answer in the one error shape (errors.py). docs.py serves
/docs and the page; wire.py is the one module that reaches into uvicorn's internals.

May import everything below the adapters (nnserve, explain, the data plane and what it stands
on); never the gRPC adapter, which is its peer.
"""
