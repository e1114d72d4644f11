#!/usr/bin/env bash
# Build (or reuse) one virtual environment of the test matrix.
# Usage: .ci/venv.sh NAME
#   NAME is py311-dj52-pg2, py311-dj52-pg3, py313-dj60-pg2, py313-dj61-pg2 or py313-dj61-pg3.
# The venv is rebuilt when pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."

name=$1
case $name in
  py311-*) python=(python3.11) ;;
  py313-*) python=(env PYENV_VERSION=3.13.0 python3.13) ;;
  *) echo "unknown venv $name" >&2; exit 2 ;;
esac
case $name in
  *-dj52-*) django="Django>=5.2,<5.3"; stubs="django-stubs>=5.2,<5.3"
            tasks=("django-tasks>=0.12" "django-tasks-db>=0.13") ;;  # Tasks backport
  *-dj60-*) django="Django>=6.0,<6.1"; stubs="django-stubs>=6.0,<6.1"
            tasks=("django-tasks-db>=0.13") ;;
  *-dj61-*) django="Django>=6.1,<6.2"; stubs="django-stubs>=6.1,<6.2"
            tasks=("django-tasks-db>=0.13") ;;  # django.tasks is built in
esac
case $name in
  *-pg2) driver="psycopg2-binary>=2.9.9" ;;
  *-pg3) driver="psycopg[binary,pool]>=3.2" ;;
esac

venv=.venv/$name
stamp=$venv/.djthreads-stamp
want=$(cat pyproject.toml .ci/venv.sh | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
rm -rf "$venv"
"${python[@]}" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e ".[test,lint,progress]" "$django" "$stubs" "$driver" "${tasks[@]}"
echo "$want" > "$stamp"
echo "built $venv: $("$venv/bin/python" -c 'import django, sys; print(sys.version.split()[0], "Django", django.__version__)')"
