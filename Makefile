# The two commands a new user needs:  make demo   (main job)   and   make test   (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.recircuit-installed

.PHONY: setup demo test lint bench figures clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) ./scripts/setup_env.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recircuit demo $(ARGS)

test: $(STAMP)
	./scripts/install_browser.sh
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check recircuit tests benchmarks

figures: $(STAMP)
	$(VENV)/bin/recircuit figures --results runs/demo --out figures $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/score_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
