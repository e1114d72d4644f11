#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432. Exit 0 when it does, 1 when
# it cannot (a failure under CI=true; callers skip the PostgreSQL runs otherwise).
set -uo pipefail

up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

if up; then exit 0; fi
if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
  version=$(ls /etc/postgresql | head -n1)
  echo "PostgreSQL is stopped: starting cluster $version/main" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do up && exit 0; sleep 1; done
fi
exit 1
