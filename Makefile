# Dataspace — the two front-door commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The pod alone (pod/pyproject.toml): its own venv, without the server stack.
POD_VENV := .pod-venv
POD_PY := $(POD_VENV)/bin/python
POD_STAMP := $(POD_VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
# PostgreSQL and Redis for tests, when reachable (here and in CI); SQLite / no Redis otherwise.
TEST_PG_URL ?= postgres://postgres@127.0.0.1:5432/dataspace
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# The embedded default: SQLite file, in-memory channel layer, in-process workers.
EMBEDDED_ENV := env -u DATABASE_URL -u REDIS_URL DEBUG=1

.PHONY: help
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build first, so nothing later pulls a CUDA torch.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.PHONY: install
install: $(STAMP)  ## create .venv and install the project with its test tools

$(POD_STAMP): pod/pyproject.toml
	rm -rf $(POD_VENV)
	$(PYTHON) -m venv $(POD_VENV)
	$(POD_PY) -m pip install --quiet torch==2.13.0
	$(POD_PY) -m pip install --quiet './pod[test]'
	@touch $(POD_STAMP)

.PHONY: test-pod
test-pod: $(POD_STAMP)  ## the pod alone: its tests in a venv holding dataspace-pod and no server stack
	@# The current sources as a wheel (not editable: the tests check they run from site-packages);
	@# setuptools builds in pod/, where a stale build/ could ship a module deleted since.
	rm -rf pod/build pod/src/*.egg-info
	$(POD_PY) -m pip install --quiet --no-deps --force-reinstall ./pod
	rm -rf pod/build pod/src/*.egg-info
	PYTHONPATH=pod $(POD_VENV)/bin/pytest -c pod/pyproject.toml --rootdir=. $(POD_PYTEST_ARGS)

.PHONY: chromium
chromium:  ## install Debian's Chromium for the browser tests, if missing
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

.PHONY: services
services:  ## start the local PostgreSQL and Redis if they have stopped
	@pg_isready -q -h 127.0.0.1 -p 5432 || { command -v pg_ctlcluster >/dev/null && pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start && sleep 2; } || true
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || { command -v redis-server >/dev/null && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null && sleep 1; } || true

.PHONY: lint
lint: $(STAMP)  ## ruff, mypy (django-stubs) and the import-linter contract
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=1 $(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

.PHONY: test
test: $(STAMP) chromium services lint test-pod  ## set up and run every test (PostgreSQL + Redis when reachable)
	@if pg_isready -q -h 127.0.0.1 -p 5432; then export DATABASE_URL=$(TEST_PG_URL); echo "tests on PostgreSQL ($(TEST_PG_URL))"; else echo "PostgreSQL not reachable: tests on SQLite"; fi; \
	if redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then export REDIS_URL=$(TEST_REDIS_URL); fi; \
	SECRET_KEY=test-secret-key-not-for-production DEBUG=0 ALLOWED_HOSTS='*' \
	  DATASPACE_POD_BIN=$(CURDIR)/$(POD_VENV)/bin/dataspace-pod $(PY) -m pytest $(PYTEST_ARGS)

.PHONY: migrate
migrate: $(STAMP)
	$(EMBEDDED_ENV) $(PY) manage.py migrate --no-input -v 0

.PHONY: messages
messages: $(STAMP)  ## refresh the fr/de catalogs from the code (needs GNU gettext) and compile them
	$(EMBEDDED_ENV) $(PY) manage.py makemessages -l fr -l de --add-location file --no-wrap \
	  -i '.venv/*' -i 'tests/*' -i 'docker/*' -i 'build/*' -i 'demo-output*'
	$(EMBEDDED_ENV) $(PY) manage.py compile_catalogs

.PHONY: seed
seed: migrate  ## catalog, demo accounts, a demo provider and request (idempotent)
	$(EMBEDDED_ENV) $(PY) manage.py seed_demo

.PHONY: serve
serve: seed  ## serve the portal on the embedded default at http://$(HOST):$(PORT)/
	$(EMBEDDED_ENV) $(VENV)/bin/uvicorn dataspace.asgi:application --host $(HOST) --port $(PORT) \
	  --ws-per-message-deflate false --ws-ping-interval 60

.PHONY: demo
demo: migrate  ## a whole federation on the embedded default; writes demo-output/report.json/png
	$(EMBEDDED_ENV) $(PY) manage.py demo

.PHONY: bench
bench: $(STAMP)  ## secure-aggregation benchmark (1M parameters, 100 pods, K=16, 10% dropout)
	$(PY) -m training.secagg.bench --clients 100 --neighbours 16 --dim 1000000 --dropout 0.1

.PHONY: bench-federation
bench-federation: $(STAMP)  ## 100-pod rounds (100k parameters), 1000-pod rounds (digits, 10k); 1000 connected pods
	$(EMBEDDED_ENV) $(PY) -m dataspace.bench.federation --mode round --pods 100 --params 100000 --rounds 3 --simulators 2
	$(EMBEDDED_ENV) $(PY) -m dataspace.bench.federation --mode round --pods 1000 --params 10000 --dataset digits --rounds 2 --simulators 2
	$(EMBEDDED_ENV) $(PY) -m dataspace.bench.federation --mode connections --pods 1000

.PHONY: bench-idle
bench-idle: $(STAMP)  ## idle pods held by one server process: RSS and CPU at 1,000 / 5,000 / 10,000 connections
	$(EMBEDDED_ENV) $(PY) -m dataspace.bench.idle --steps 1000,5000,10000 --hold 60

.PHONY: bench-soak
bench-soak: $(STAMP)  ## idle soak: 40 pods on the Redis channel layer, two web processes, 10 min; counts drops
	env $(if $(SOAK_DATABASE_URL),DATABASE_URL=$(SOAK_DATABASE_URL),-u DATABASE_URL) DEBUG=1 \
	  REDIS_URL=$${SOAK_REDIS_URL:-$(TEST_REDIS_URL)} \
	  $(PY) -m dataspace.bench.soak --pods $${SOAK_PODS:-40} --duration $${SOAK_SECONDS:-600}

.PHONY: bench-keylog
bench-keylog: migrate  ## key log: proof generation/verification at 10,000 entries (core + database)
	$(EMBEDDED_ENV) $(PY) -m pods.key_log_bench --entries 10000 --database

.PHONY: bench-learning
bench-learning: $(STAMP)  ## FedAvg/M, FedAdam/Yogi/Adagrad, SCAFFOLD, FedNova under label skew and slow pods
	$(PY) -m dataspace.bench.learning --output bench-output/learning

.PHONY: bench-groups
bench-groups: $(STAMP)  ## group value: a label-flipped group is flagged; robust mode vs plain FedAvg
	$(PY) -m dataspace.bench.groups --pods 30 --groups 3 --rounds 8

.PHONY: bench-learning-live
bench-learning-live: $(STAMP)  ## one configuration (breast, Dirichlet 0.3, FedAvgM, 20 pods) live vs the in-process bench
	$(EMBEDDED_ENV) $(PY) -m dataspace.bench.live_learning

.PHONY: clean
clean:  ## remove the embedded database, media and caches
	rm -rf var demo-output demo-output-dp staticfiles .mypy_cache .ruff_cache .pytest_cache .hypothesis
	rm -rf $(POD_VENV) pod/build pod/src/*.egg-info
