#!/usr/bin/env bash
# The Python SDK (sdk/python): lint, format, type-check, then its tests against the real server.
# Usage: .ci/sdk-python.sh [path-to-keyward-binary]   (default: target/debug/keyward, which must
# be built already: cargo build -p keyward --locked)
# Needs Python 3.9+ with venv; installs the SDK and its pinned dev tools from PyPI into
# target/sdk-python-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${1:-target/debug/keyward}"
if [ ! -x "$binary" ]; then
  echo "error: the keyward binary $binary does not exist: build it with cargo build -p keyward --locked" >&2
  exit 1
fi
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"

venv=target/sdk-python-venv
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
echo "== installing sdk/python with its dev tools"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "./sdk/python[dev]"

echo "== ruff check"
"$venv/bin/ruff" check sdk/python
echo "== ruff format --check"
"$venv/bin/ruff" format --check sdk/python
echo "== mypy --strict"
(cd sdk/python && "../../$venv/bin/mypy" --strict src/keyward tests)
echo "== pytest"
(cd sdk/python && KEYWARD_BIN="$binary" "../../$venv/bin/pytest" -q)
