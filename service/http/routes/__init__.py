"""FastAPI's routes, thin over the data plane: /predict/* (predict.py), /explain/* (explain.py),
/health, /ready, /models and /metrics (ops.py), and the Open Inference Protocol (v2.py); what
predictions and explanations share is in common.py."""
