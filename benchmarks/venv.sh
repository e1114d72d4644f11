#!/usr/bin/env bash
# Build (or reuse) one benchmark venv: .venv/bench-pg2 (psycopg2) or
# .venv/bench-pg3 (psycopg 3 + pool). Separate venvs because Django picks
# psycopg 3 whenever it is importable. Never touches the test matrix venvs.
set -euo pipefail
cd "$(dirname "$0")/.."

name=$1
case $name in
  bench-pg2) driver="psycopg2-binary>=2.9.9" ;;
  bench-pg3) driver="psycopg[binary,pool]>=3.2" ;;
  *) echo "unknown bench venv $name" >&2; exit 2 ;;
esac

venv=.venv/$name
stamp=$venv/.djthreads-stamp
want=$(cat pyproject.toml benchmarks/venv.sh | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
rm -rf "$venv"
python3.11 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e ".[bench]" "Django>=5.2,<5.3" "$driver"
echo "$want" > "$stamp"
echo "built $venv"
