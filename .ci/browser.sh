#!/usr/bin/env bash
# The example in a real browser (tests/browser): Playwright's Python API drives
# Debian's chromium, headless, against `manage.py runserver` on a free port
# of 127.0.0.1. Installs chromium with apt when it is missing and builds its
# own venv (.venv/browser); it never runs `playwright install` and downloads
# no browser. Screenshots land in build/browser/.
# Usage: .ci/browser.sh [pytest arguments]   (make browser)
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=/usr/bin/chromium
if [[ ! -x $chromium ]]; then
  echo "=== installing Debian's chromium"
  sudo=()
  if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi

venv=.venv/browser
stamp=$venv/.djthreads-stamp
want=$(cat pyproject.toml .ci/browser.sh | sha256sum | cut -c1-16)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  rm -rf "$venv"
  python3.11 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e ".[test]" "playwright>=1.49"
  echo "$want" > "$stamp"
  echo "built $venv: $("$venv/bin/python" -m pip show playwright | grep ^Version)"
fi

# tests/conftest.py reads the suite's settings; the example server has its own.
DJANGO_SETTINGS_MODULE=tests.settings_sqlite DJTHREADS_CHROMIUM=$chromium \
  "$venv/bin/python" -m pytest -q tests/browser "$@"
echo "screenshots: build/browser/"
