# Shared by scripts/run and scripts/test: find Python 3.11+, make .venv, make sure redis-server (and, for
# the tests, nginx) exists.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

find_python() {
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "Python 3.11 or newer is required" >&2
  return 1
}

# ensure_venv EXTRAS: create .venv if needed and install the project (editable) with EXTRAS.
ensure_venv() {
  local extras=${1:-}
  if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT$extras"
}

# ensure_redis_server: the tests and the local run start their own redis-server.
ensure_redis_server() {
  if command -v redis-server >/dev/null 2>&1; then return 0; fi
  echo "redis-server not found: installing it from the distribution's packages" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
}

# ensure_chromium: tests/test_e2e_gunicorn.py opens /docs in headless Chromium (Debian's package), and
# tests/test_dashboard.py drives it with Playwright (the test extra; it downloads no browser of its own).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then return 0; fi
  echo "chromium not found: installing it from the distribution's packages" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
}

# ensure_nginx: tests/test_nginx.py runs deploy/nginx/nginx.conf in front of a gunicorn it starts.
# Only the binary is needed (the tests start nginx on a free loopback port with their own runtime paths).
ensure_nginx() {
  if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then return 0; fi
  echo "nginx not found: installing it from the distribution's packages" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq nginx >/dev/null
}
