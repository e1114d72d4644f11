# make test  — lint, type-check and run the suite across the matrix (builds its own venvs)
# make demo  — run the example job
VENVS := py311-dj52-pg2 py313-dj61-pg2 py311-dj52-pg3 py313-dj61-pg3
LINT := .venv/py311-dj52-pg2/bin

.PHONY: test venvs lint typecheck suite demo clean

test: lint typecheck suite

venvs:
	@for v in $(VENVS); do .ci/venv.sh $$v || exit 1; done

lint: venvs
	$(LINT)/ruff check .
	$(LINT)/ruff format --check .

typecheck: venvs
	.venv/py311-dj52-pg2/bin/mypy
	.venv/py313-dj61-pg3/bin/mypy

suite: venvs
	.ci/suite.sh

clean:
	rm -rf .venv
