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

# Two runs at a time: the suite mostly waits on PostgreSQL, threads and child
# processes, and one after the other the eight runs took 10 of CI's 14 minutes.
# Runs never share a database or an application_name (DJTHREADS_PG_NAME).
# Each run's output is printed whole when it ends.
JOBS=${DJTHREADS_SUITE_JOBS:-2}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_one() {
  local i=$1 venv=$2 module=$3
  DJANGO_SETTINGS_MODULE=$module DJTHREADS_PG_NAME="${DJTHREADS_RUN_PREFIX:-djthreads}_${venv//-/_}_${module##*_}" \
    ".venv/$venv/bin/python" -m pytest -q "${PYTEST_ARGS[@]}" >"$logs/$i.log" 2>&1
  echo $? >"$logs/$i.rc"
  echo "=== $venv $module ==="
  cat "$logs/$i.log"
}

for i in "${!runs[@]}"; do
  read -r venv module <<<"${runs[$i]}"
  if [[ $module != tests.settings_sqlite && $pg == no ]]; then
    echo "SKIPPED (no PostgreSQL): $venv $module" >&2
    echo 0 >"$logs/$i.rc"
    continue
  fi
  while (($(jobs -rp | wc -l) >= JOBS)); do
    wait -n || true
  done
  run_one "$i" "$venv" "$module" &
done
wait

failed=()
for i in "${!runs[@]}"; do
  if [[ $(cat "$logs/$i.rc" 2>/dev/null) != 0 ]]; then
    failed+=("${runs[$i]}")
  fi
done

if ((${#failed[@]})); then
  echo "FAILED runs: ${failed[*]}" >&2
  exit 1
fi
echo "all ${#runs[@]} matrix runs passed"
