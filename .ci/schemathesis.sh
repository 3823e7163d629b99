#!/usr/bin/env bash
# Property-based API check (issue 8): schemathesis generates requests from /openapi.json and
# fails on any 5xx or any response that does not match the schema the server publishes.
# Bounded and derandomised so CI is neither slow nor flaky: about 2 minutes on 2 cores.
# Usage: .ci/schemathesis.sh [path-to-keyward-binary]   (default: builds target/debug/keyward)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=3.39.16
# schemathesis 3.39 breaks on Hypothesis releases after 6.131.14 ('many' object has no attribute
# 'more'), so Hypothesis is pinned too.
HYPOTHESIS_VERSION=6.131.14
# Examples per operation; raise it locally for a longer run (ST_MAX_EXAMPLES=1000 .ci/schemathesis.sh).
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-100}"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

venv="target/schemathesis-venv-$SCHEMATHESIS_VERSION-$HYPOTHESIS_VERSION"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION"
fi

binary="${1:-}"
if [ -z "$binary" ]; then
  cargo build -q -p keyward --locked
  binary=target/debug/keyward
fi

# A free loopback port: bind port 0, read what the kernel chose, release it.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

# Fresh SQLite database; rate limits off, or the generated logins and registrations would get
# 429s instead of reaching the handlers under test.
KEYWARD_DATABASE_URL="sqlite://$work/keyward.db" \
  KEYWARD_PUBLIC_URL="$base" \
  KEYWARD_RATE_LIMITS__ENABLED=false \
  "$binary" serve --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!

# Python, not curl: one less tool for a fresh machine to need.
ready() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=2)' "$base" 2>/dev/null; }
for _ in $(seq 1 100); do
  if ready; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "keyward serve exited early:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.2
done

# A user (its session's access token) and an admin-scoped API key, passed on every request so
# the authenticated operations are exercised past the 401.
read -r token key < <(python3 - "$base" <<'PY'
import json, sys, urllib.request

base = sys.argv[1]

def post(path, body, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = "Bearer " + token
    request = urllib.request.Request(base + path, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)

session = post("/v1/auth/register", {"email": "schemathesis@example.com", "password": "correct horse battery staple"})
key = post("/v1/keys", {"name": "schemathesis", "scopes": ["admin"]}, session["access_token"])
print(session["access_token"], key["key"])
PY
)
if [ -z "${key:-}" ]; then
  echo "could not register a user and create a key" >&2
  exit 1
fi

# Positive and negative (schema-violating) data; derandomised, so every run sends the same
# requests and CI cannot flip. Checks: no 5xx, documented status codes and media types, bodies
# matching their schemas.
run_schemathesis() {
  "$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --data-generation-method all \
    --hypothesis-max-examples "$MAX_EXAMPLES" \
    --hypothesis-derandomize \
    --hypothesis-suppress-health-check all \
    --request-timeout 10000 \
    --experimental=openapi-3.1 \
    --no-color "$@"
}

status=0
echo "== schemathesis: every operation, with an admin API key"
run_schemathesis --header "Authorization: Bearer $key" || status=$?
# The operations an API key may not call (403 session_required), with the session's access
# token. Logout is left out: it would end the session the rest of the pass runs on.
echo "== schemathesis: the session-only operations, with an access token"
run_schemathesis --header "Authorization: Bearer $token" \
  --include-path /v1/auth/password --include-path /v1/auth/device/approve --include-path /v1/audit \
  --include-path /v1/webhooks --include-path '/v1/webhooks/{id}' \
  --include-path '/v1/webhooks/{id}/deliveries' ||
  status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis failed; the server's log follows." >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
