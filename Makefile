# crowdgate: `make demo` runs the demo, `make test` runs the tests (both install what they need first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crowdgate-installed

.PHONY: install demo test lint bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so its CPU build is used (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)
	$(BIN)/python -c "from scripts.services import redis_server_binary as r; r()"
	$(BIN)/crowdgate-labelstudio install

demo: install
	$(BIN)/crowdgate-demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q $(ARGS)

bench: install
	$(BIN)/pip install -q -r requirements-bench.txt
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .crowdgate .pytest_cache .ruff_cache
