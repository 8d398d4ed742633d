# The two commands a newcomer needs: `make demo` and `make test`. Every target builds its own
# virtualenv on first use, so a fresh machine needs only Python and make.
SHELL := /bin/bash
PYTHON ?= $(shell scripts/find_python.sh 3.13)
SAM_PYTHON ?= $(PYTHON)
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
SAM_VERSION := 1.170.0
# The security scanner of `make lint`, in a virtualenv of its own: it pins its own boto3, PyYAML and more.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
# make rehearse: the AWS emulator, in a virtualenv of its own, with the SAM transform the CLI above
# bundles (aws-sam-translator), so the emulator expands the template as `sam validate` reads it.
REHEARSE_VENV := .venv-rehearse
MINISTACK_VERSION := 1.5.33
SAM_TRANSLATOR_VERSION := 1.115.0
PYTEST_ARGS ?=
# pytest-xdist workers, each with a local stack of its own on free ports: two per core, because a
# worker mostly waits on its stack (measured: one per core kept the cores about half busy); 0 runs
# the tests one after another in pytest's own process (as PYTEST_ARGS=-n0 does).
PYTEST_WORKERS ?= $(shell echo $$(( 2 * $$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1) )))
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS)
MUTATION_ARGS ?=
# make test's JUnit report, and beside it (.tree) the state of the tree it ran on: the mutation
# check's baseline with --suite-passed (scripts/mutation_check.py), so CI runs the suite once.
TEST_RESULTS := .local/test-results.xml

.PHONY: help venv demo example-workflow local test unit integration area test-v2 e2e check-template rehearse lint mypy checkov mutation bench editor-screenshot clean

help:
	@echo "make demo            run one job through the local stack and show the result images"
	@echo "make test            install what the tests need, run them and the template checks"
	@echo "make area AREA=name  one area's unit and integration tests ($(AREAS))"
	@echo "make local           start the local stack in the foreground (Ctrl-C stops it)"
	@echo "make rehearse        deploy template.yaml into MiniStack (IAM enforced), run every path, doctor and the IAM mutants"
	@echo "make example-workflow  the Step Functions example (examples/stepfunctions/) on a running make local"
	@echo "make lint            ruff (lint, format, complexity), the import contract, mypy and checkov"
	@echo "make mutation        break each guarantee's mechanism on purpose; a test must fail for each"
	@echo "make bench           performance benchmarks (not part of make test)"
	@echo "make editor-screenshot  docs/images/editor.png, taken by the mask editor's browser test"

$(BIN)/.installed: requirements-dev.txt layers/vary_region/requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .
	@touch $@

venv: $(BIN)/.installed

$(SAM_VENV)/.installed:
	@test -x $(SAM_VENV)/bin/python || $(SAM_PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_VERSION)
	@touch $@

$(CHECKOV_VENV)/.installed:
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	@touch $@

$(REHEARSE_VENV)/.installed:
	@test -x $(REHEARSE_VENV)/bin/python || $(PYTHON) -m venv $(REHEARSE_VENV)
	$(REHEARSE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		ministack==$(MINISTACK_VERSION) aws-sam-translator==$(SAM_TRANSLATOR_VERSION)
	@touch $@

demo: venv
	$(BIN)/python -m vary_region_local.demo

# examples/stepfunctions/ on a running `make local` started with CALLER_STATE_MACHINE_ARNS
# (docs/step-functions.md): a Map of callback tasks, one job per region, then their images listed.
example-workflow: venv
	$(BIN)/python -m vary_region_local.example_workflow

local: venv
	$(BIN)/vary-region-local

test: venv $(SAM_VENV)/.installed
	@mkdir -p $(dir $(TEST_RESULTS)) && rm -f $(TEST_RESULTS)
	@$(BIN)/python scripts/mutation_check.py --tree-state > $(TEST_RESULTS).tree
	$(PYTEST) --junitxml=$(TEST_RESULTS) $(PYTEST_ARGS)
	CFN_LINT=$(BIN)/cfn-lint SAM=$(SAM_VENV)/bin/sam scripts/check_template.sh

unit: venv
	$(PYTEST) tests/unit $(PYTEST_ARGS)

integration: venv
	$(PYTEST) tests/integration $(PYTEST_ARGS)

# One area's tests, named like the code's areas: whichever of tests/unit/$(AREA) and
# tests/integration/$(AREA) exist (make area AREA=store).
AREAS = $(filter-out __pycache__,$(sort $(notdir $(patsubst %/,%,$(wildcard tests/unit/*/ tests/integration/*/)))))
area: venv
	@if [ -z "$(AREA)" ]; then echo "make area AREA=<name>, one of: $(AREAS)"; exit 2; fi
	@if [ -z "$(wildcard tests/unit/$(AREA) tests/integration/$(AREA))" ]; then \
		echo "no tests/unit/$(AREA) nor tests/integration/$(AREA); areas: $(AREAS)"; exit 2; fi
	$(BIN)/python -m pytest $(wildcard tests/unit/$(AREA) tests/integration/$(AREA)) $(PYTEST_ARGS)

# The integration and end-to-end suites against APIFRAME v2 (the simulator speaking v2); tests about
# v1's own forms skip, and the simulator's own tests (tests/local) are not in it. CI runs it after make test.
test-v2: venv
	VARY_REGION_TEST_API_VERSION=v2 $(PYTEST) tests/integration tests/e2e $(PYTEST_ARGS)

e2e: venv
	$(PYTEST) tests/e2e $(PYTEST_ARGS)

# docs/images/editor.png: the mask editor's browser test, which takes it once the variants are shown.
editor-screenshot: venv
	mkdir -p docs/images
	VARY_REGION_EDITOR_SCREENSHOT=$(CURDIR)/docs/images/editor.png $(BIN)/python -m pytest -n0 \
		"tests/e2e/test_mask_editor.py::test_paint_erase_undo_submit_in_chromium"

check-template: venv $(SAM_VENV)/.installed
	CFN_LINT=$(BIN)/cfn-lint SAM=$(SAM_VENV)/bin/sam scripts/check_template.sh

# docs/local-stack.md "The deploy rehearsal": sam build + sam deploy into the emulator, then every path,
# vary-region doctor (and two broken variants) and the IAM mutants (rehearsal/iam_mutants.toml), each
# a statement taken from a deployed role. REHEARSE_ARGS="--no-iam-mutants" or "--iam-mutant NAME".
REHEARSE_TOOLS = --ministack-python $(REHEARSE_VENV)/bin/python --sam $(SAM_VENV)/bin/sam --runtime-python $(PYTHON)
rehearse: venv $(SAM_VENV)/.installed $(REHEARSE_VENV)/.installed
	$(BIN)/python -m vary_region_local.rehearsal $(REHEARSE_TOOLS) $(REHEARSE_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# The dependency rule: use cases over endings over adapters over the core (pyproject.toml).
	$(BIN)/lint-imports
	@$(MAKE) --no-print-directory mypy
	@$(MAKE) --no-print-directory checkov

# The template against checkov's CloudFormation checks: any failed check fails. A finding that is not
# fixed is skipped in template.yaml itself (the resource's Metadata.checkov.skip, with its reason).
# --skip-download: nothing is fetched from the vendor's platform (no account, no network needed).
checkov: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

# The tests and benchmarks too: they are checked against the layer's types (mypy_path, pyproject.toml).
mypy: venv
	$(BIN)/mypy layers/vary_region/vary_region local/vary_region_local cli/vary_region_cli tests bench
	@# Every function's handler is named app.py: check them one at a time so the names don't clash.
	@for handler in functions/*/app.py; do $(BIN)/mypy $$handler || exit 1; done

mutation: venv
	$(BIN)/python scripts/mutation_check.py --suite-results $(TEST_RESULTS) $(MUTATION_ARGS)

bench: venv
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(REHEARSE_VENV) .aws-sam .local .pytest_cache .mypy_cache .ruff_cache demo-output
