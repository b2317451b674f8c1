# `make demo` and `make test` set everything up (a .venv with the package and its dev tools).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean check-redis

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

check-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server (>= 6.2) is needed on PATH for the tests:"; \
	  echo "  Debian/Ubuntu: sudo apt-get install redis-server    macOS: brew install redis"; \
	  exit 1; }

demo: $(STAMP)
	$(BIN)/python -m prism_limiter demo

test: $(STAMP) check-redis
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check prism_limiter tests benchmarks examples
	$(BIN)/ruff format --check prism_limiter tests benchmarks examples
	$(BIN)/mypy

# Every benchmark, CI-sized (a few minutes): one summary table, all figures in
# benchmarks/results.json. BENCH_ARGS=--full runs the scale benchmark at its large sizes.
bench: $(STAMP) check-redis
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis
