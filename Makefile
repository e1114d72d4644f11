# make test  — lint, type-check and run the suite across the matrix (builds its own venvs)
# make demo  — run the example job serially and in threads, print the table (own venv)
# make serve — the example's web page on http://127.0.0.1:8000/
# make bench — benchmarks side by side (own venvs): benchmarks/results.{md,png}
# make docs  — build docs/ with Sphinx (own venv), warnings as errors, and run its examples
# make wheel — build sdist and wheel into dist/, check them, smoke-test the wheel outside the repo
# make browser — the example's pages in headless chromium (apt) via Playwright (own venv)
# make screenshot — make browser, then copy the finished job's page to docs/_static/example.png
VENVS := py311-dj52-pg2 py313-dj60-pg2 py313-dj61-pg2 py311-dj52-pg3 py313-dj61-pg3
LINT := .venv/py311-dj52-pg2/bin

.PHONY: test venvs lint typecheck suite demo serve bench docs wheel browser screenshot clean

test: lint typecheck suite

venvs:
	@for v in $(VENVS); do .ci/venv.sh $$v || exit 1; done

lint: venvs
	$(LINT)/ruff check .
	$(LINT)/ruff format --check .

typecheck: venvs
	.venv/py311-dj52-pg2/bin/mypy
	.venv/py313-dj60-pg2/bin/mypy
	.venv/py313-dj61-pg3/bin/mypy

suite: venvs
	.ci/suite.sh

# The demo's venv: the library and tqdm only, rebuilt when pyproject.toml changes.
DEMO := .venv/demo

$(DEMO)/.stamp: pyproject.toml
	rm -rf $(DEMO)
	python3.11 -m venv $(DEMO)
	$(DEMO)/bin/pip install -q --upgrade pip
	$(DEMO)/bin/pip install -q -e ".[progress]"
	touch $@

# The demo replaces its own earlier jobs and leaves the web page's alone.
demo: $(DEMO)/.stamp
	$(DEMO)/bin/python example/manage.py migrate -v0
	$(DEMO)/bin/python example/manage.py demo
	@echo "See it on a web page: make serve, then open http://127.0.0.1:8000/"

serve: $(DEMO)/.stamp
	$(DEMO)/bin/python example/manage.py migrate -v0
	$(DEMO)/bin/python example/manage.py runserver 127.0.0.1:8000

# Three venvs: Django picks psycopg 3 whenever it is importable, so psycopg2
# figures come from bench-pg2 and psycopg 3 pool figures from bench-pg3;
# the durable-tasks comparison needs Django 6 (bench-durable).
bench:
	benchmarks/venv.sh bench-pg2
	benchmarks/venv.sh bench-pg3
	benchmarks/venv.sh bench-durable
	.ci/postgres.sh
	.venv/bench-pg2/bin/python benchmarks/run.py

# The docs' venv: Sphinx, furo, MyST and the newest Django line CI tests (6.1,
# hence Python 3.13), rebuilt when docs/requirements.txt or pyproject.toml change.
# The doctest builder runs the tutorial's and how-tos' code (docs/_examples).
DOCS_VENV := .venv/docs
SPHINX := $(DOCS_VENV)/bin/sphinx-build -W --keep-going -n -q

$(DOCS_VENV)/.stamp: docs/requirements.txt pyproject.toml
	rm -rf $(DOCS_VENV)
	PYENV_VERSION=3.13.0 python3.13 -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install -q --upgrade pip
	$(DOCS_VENV)/bin/pip install -q -r docs/requirements.txt -e .
	touch $@

docs: $(DOCS_VENV)/.stamp
	$(SPHINX) -b html docs docs/_build/html
	$(SPHINX) -b doctest docs docs/_build/doctest
	@echo "Open docs/_build/html/index.html"

wheel:
	.ci/wheel.sh

browser:
	.ci/browser.sh

screenshot: browser
	mkdir -p docs/_static
	cp build/browser/status-done.png docs/_static/example.png

clean:
	rm -rf .venv docs/_build docs/_generated
