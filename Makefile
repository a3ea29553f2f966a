# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: serve test test-all lint fmt lock train bench clean grpc-stubs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The service alone, at the versions requirements.lock pins (no [train] extra: torch is never
# installed for serving).
$(VENV)/.serve: pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	touch $@

# The same locked runtime, plus the training and test extras.
$(VENV)/.test: pyproject.toml requirements.lock | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r requirements.lock
	$(PIP) install --quiet -e '.[train,test]'
	touch $@

# Re-pins the runtime packages after a change to pyproject.toml's dependencies (or to take
# upgrades within its ranges: rm requirements.lock first). The [tracing] extra is part of the
# runtime: the image can send traces when the OTEL_* variables ask (README: Tracing).
lock: $(VENV)/.test
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --extra tracing \
		--no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

serve: $(VENV)/.serve
	$(BIN)/nnserve

# Extra pytest options, e.g. make test PYTEST_ARGS="-k spam -x"
PYTEST_ARGS ?=
# The fast ring: no Docker, browser, real-server or long tests, except one smoke test per protocol.
FAST := smoke or not (process or browser or docker or slow)
test: $(VENV)/.test
	$(BIN)/python -m pytest -m "$(FAST)" $(PYTEST_ARGS)

# Every test: what `make test` runs, plus real servers, Chromium, the Docker engine and the soak.
test-all: $(VENV)/.test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (lint and format check) and strict mypy over service, training, bench and tests.
lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(VENV)/.test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Retrains every model (or one: make train MODEL=digit) into a new version folder under models/.
MODEL ?= all
train: $(VENV)/.test
	$(BIN)/python -m training $(MODEL)

# Throughput and latency against the bare ceiling and raw onnxruntime (BENCH_SECONDS=10 per run).
bench: $(VENV)/.test
	PYTHONPATH=tests $(BIN)/python -m bench.run

# The gRPC stubs, committed, from service/grpc/inference.proto (tests/test_grpc_stubs.py checks
# they are current); run after changing the .proto.
GRPC_STUBS := -I. --python_out=. --pyi_out=. --grpc_python_out=. service/grpc/inference.proto
grpc-stubs: $(VENV)/.test
	$(BIN)/python -m grpc_tools.protoc $(GRPC_STUBS)

clean:
	rm -rf $(VENV) .pytest_cache
