# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast stop ui mlflow-ui bench bench-scaling bench-flights clean spec-init spec-check

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

## demo: install, start a local PostgreSQL, run the nightly DAG over 12 simulated nights
demo: $(STAMP)
	$(PY) scripts/demo.py run

## test: install (the venv, Debian's chromium for the browser tests and redis-server for the Celery test),
## then the whole suite on real PostgreSQL, MLflow and Airflow: every tier, pure to e2e (.ci/run runs this)
test: $(STAMP)
	bash scripts/install_chromium.sh
	bash scripts/install_redis.sh
	$(PY) -m pytest

## test-fast: the quick loop while editing: the pure and postgres tiers (no DAG run, no Airflow
## process; under 2 minutes on 2 cores). Tiers: pytest.ini; more: make test-fast ARGS="-x -k name"
test-fast: $(STAMP)
	$(PY) -m pytest -m "pure or postgres" $(ARGS)

## stop: stop the demo's PostgreSQL (and check it is gone: fails saying so when it could not)
stop:
	@if test -x $(PY); then $(PY) scripts/demo.py stop; else echo "nothing to stop"; fi

## ui: the Airflow UI on the demo's state (http://127.0.0.1:8080, login disabled for local use; every
## server on 127.0.0.1, no log server: scripts/local_stack.py serve_ui). Another port: make ui PORT=8081
PORT ?= 8080
ui: $(STAMP)
	$(PY) scripts/demo.py ui --port $(PORT)

## mlflow-ui: the MLflow UI on the demo's registry (http://localhost:5000)
mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///$(CURDIR)/.nightshift/mlflow/mlflow.db

## spec-init: draft a commented spec from a source table (README "Adding a data set"), e.g.
##   make spec-init ARGS="--connection nightshift_source --table public.t --key id --timestamp ts --label y --out include/specs/t.yaml"
spec-init: $(STAMP)
	$(PY) -m include.nightshift spec init $(ARGS)

## spec-check: check a spec against its live source, every problem at once: make spec-check ARGS=include/specs/t.yaml
spec-check: $(STAMP)
	$(PY) -m include.nightshift spec check $(ARGS)

## bench: each stage against its naive approach and raw floor, then the scaling table of a quiet night on the
## Celery stack at 1M rows (about 10 minutes; 5M and 10M: make bench-scaling)
bench: $(STAMP)
	$(PY) benchmarks/bench_drift.py
	$(PY) benchmarks/bench_publish.py
	$(PY) benchmarks/bench_snapshot.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_validation.py
	bash scripts/install_redis.sh
	$(PY) benchmarks/bench_scaling.py --rows 1000000

## bench-scaling: a quiet night on the native Celery stack (2 workers) at 1M, 5M and 10M rows: make bench-scaling ARGS="--rows 1000000"
bench-scaling: $(STAMP)
	bash scripts/install_redis.sh
	$(PY) benchmarks/bench_scaling.py $(ARGS)

## bench-flights: the real flights data set replayed for 60 nights, judged against independent baselines
bench-flights: $(STAMP)
	$(PY) benchmarks/bench_flights.py $(ARGS)

clean: stop
	rm -rf .nightshift
