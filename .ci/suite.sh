#!/usr/bin/env bash
# Run the test suite across the matrix: each venv on SQLite and PostgreSQL
# (psycopg2), and the psycopg 3 venvs on Django's connection pool.
# DJTHREADS_RUN_PREFIX names the databases, so two checkouts can run the suite at once.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTEST_ARGS=("$@")
runs=(
  "py311-dj52-pg2 tests.settings_sqlite"
  "py311-dj52-pg2 tests.settings_postgres"
  "py313-dj60-pg2 tests.settings_sqlite"
  "py313-dj60-pg2 tests.settings_postgres"
  "py313-dj61-pg2 tests.settings_sqlite"
  "py313-dj61-pg2 tests.settings_postgres"
  "py311-dj52-pg3 tests.settings_postgres_pool"
  "py313-dj61-pg3 tests.settings_postgres_pool"
)

pg=yes
if ! .ci/postgres.sh; then
  if [[ ${CI:-} == true ]]; then
    echo "ERROR: PostgreSQL does not answer on 127.0.0.1:5432 and CI=true: failing." >&2
    exit 1
  fi
  pg=no
  echo "############################################################" >&2
  echo "# WARNING: PostgreSQL is not available on 127.0.0.1:5432.   #" >&2
  echo "# SKIPPING every PostgreSQL run: only SQLite is tested.     #" >&2
  echo "############################################################" >&2
fi

failed=()
for run in "${runs[@]}"; do
  read -r venv module <<<"$run"
  if [[ $module != tests.settings_sqlite && $pg == no ]]; then
    echo "SKIPPED (no PostgreSQL): $venv $module" >&2
    continue
  fi
  echo "=== $venv $module ==="
  if ! DJANGO_SETTINGS_MODULE=$module DJTHREADS_PG_NAME="${DJTHREADS_RUN_PREFIX:-djthreads}_${venv//-/_}_${module##*_}" \
      ".venv/$venv/bin/python" -m pytest -q "${PYTEST_ARGS[@]}"; then
    failed+=("$venv $module")
  fi
done

if ((${#failed[@]})); then
  echo "FAILED runs: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#runs[@]} matrix runs passed"
