#!/usr/bin/env bash
# Build (or reuse) one benchmark venv: .venv/bench-pg2 (psycopg2),
# .venv/bench-pg3 (psycopg 3 + pool) or .venv/bench-durable (the Tasks
# backend comparisons: Python 3.13, Django 6.1, psycopg2). Separate venvs
# because Django picks psycopg 3 whenever it is importable, and
# django-tasks-local(-db) needs Django >= 6.0. Never touches the test matrix venvs.
set -euo pipefail
cd "$(dirname "$0")/.."

name=$1
python=(python3.11)
django="Django>=5.2,<5.3"
extras="bench"
case $name in
  bench-pg2) driver="psycopg2-binary>=2.9.9" ;;
  bench-pg3) driver="psycopg[binary,pool]>=3.2" ;;
  bench-durable) driver="psycopg2-binary>=2.9.9"; python=(env PYENV_VERSION=3.13.0 python3.13)
                 django="Django>=6.1,<6.2"; extras="bench,durable" ;;
  *) echo "unknown bench venv $name" >&2; exit 2 ;;
esac

venv=.venv/$name
stamp=$venv/.djthreads-stamp
want=$(cat pyproject.toml benchmarks/venv.sh | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
rm -rf "$venv"
"${python[@]}" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e ".[$extras]" "$django" "$driver"
if [[ $name == bench-durable ]]; then
  # Optional, like huey: each comparison is skipped with a note without it.
  "$venv/bin/pip" install -q "django-tasks-local-db>=0.4" ||
    echo "django-tasks-local-db is not installed: its benchmark rows are skipped" >&2
  "$venv/bin/pip" install -q "django-tasks-local>=2.0" ||
    echo "django-tasks-local is not installed: its benchmark rows are skipped" >&2
fi
echo "$want" > "$stamp"
echo "built $venv"
