#!/usr/bin/env bash
# The release artefact, tested: build the sdist and wheel into dist/ with
# `python -m build`, check them (twine check, .ci/wheel/check_dist.py), then
# install the wheel from dist/ into fresh venvs in a temporary directory, far
# from this source tree, and run the smoke project there (.ci/wheel/smoke):
# a run_async task on SQLite, manage.py check, the pytest plugin's fixtures.
# One venv per end of the matrix: Python 3.11 (pip picks Django 5.2) and
# Python 3.13 (pip picks the newest Django the wheel admits).
# Needs only PyPI. Usage: .ci/wheel.sh (or make wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

work=$(mktemp -d "${TMPDIR:-/tmp}/djthreads-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/log

echo "=== build sdist and wheel"
python3.11 -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install -q --upgrade pip 2>"$log"
"$work/build-venv/bin/pip" install -q build twine 2>>"$log"
rm -rf dist
if ! "$work/build-venv/bin/python" -m build --outdir dist . >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
ls dist
"$work/build-venv/bin/twine" check --strict dist/*
"$work/build-venv/bin/python" .ci/wheel/check_dist.py dist .ci/suite.sh
wheel=$(echo "$repo"/dist/*.whl)

for python in "python3.11" "env PYENV_VERSION=3.13.0 python3.13"; do
  tag=${python##* }
  venv=$work/venv-$tag
  project=$work/project-$tag
  echo "=== smoke test of the installed wheel: $tag"
  $python -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip 2>"$log"
  "$venv/bin/pip" install -q "$wheel" pytest pytest-django pytest-timeout 2>>"$log"
  cp -r .ci/wheel/smoke "$project"
  # cwd and sys.path outside the repository: only the installed wheel imports.
  (
    cd "$project"
    unset PYTHONPATH
    "$venv/bin/python" smoke.py
    "$venv/bin/python" -m pytest -q test_plugin.py
  )
done
echo "wheel smoke test passed: $(basename "$wheel")"
