#!/usr/bin/env bash
# Runs every test: unit tests, and the integration tests on SQLite and on
# PostgreSQL. Without TEST_DATABASE_URL a throwaway PostgreSQL cluster is
# started for the run (see pg-throwaway.sh); PostgreSQL tests never skip.
# Ends with one line totalling every test binary: `tests: N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  # shellcheck source=scripts/pg-throwaway.sh
  source scripts/pg-throwaway.sh
fi
# The legacy systems' own ORMs (SQLAlchemy + Alembic, peewee) from PyPI: the
# adoption tests build the platforms' databases with them. The Python
# client's tests (pytest, httpx, websockets) run in the same environment.
venv=.venv-legacy
if ! "$venv/bin/python" -c 'import sqlalchemy, alembic, psycopg2, peewee, httpx, websockets, pytest, setuptools' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    -r tests/legacy/requirements.txt -r clients/python/requirements-test.txt
fi
export LEGACY_PYTHON="$PWD/$venv/bin/python"
log=$(mktemp)
status=0
# The benchmark tool's generator is tested by running its binary (its own
# workspace member), which `cargo test` does not build.
cargo build --locked -p points-gateway-bench --bin bench
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
# Tests that restart the PostgreSQL cluster run alone, after the others.
if [ -n "${TEST_PG_RESTART:-}" ]; then
  cargo test --locked --test api "$@" -- --ignored 2>&1 | tee -a "$log" || status=$?
else
  echo "TEST_PG_RESTART unset: the PostgreSQL restart test needs the throwaway cluster; not run" >&2
  status=1
fi
# The Python client, installed as a user would install it, tested by pytest
# against gateways its tests start (the binary cargo test built).
pylog=$(mktemp)
"$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall ./clients/python || status=$?
(cd clients/python && GATEWAY_BIN="$PWD/../../target/debug/points-gateway" \
  "../../$venv/bin/python" -m pytest -q -p no:cacheprovider tests) 2>&1 | tee "$pylog" || status=$?
passed=$(grep -Eo '^test result: .*\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
# pytest's last line: "N passed[, M failed][, K errors] in T s".
summary=$(tail -n 1 "$pylog")
count() { { echo "$summary" | grep -Eo "[0-9]+ ($1)" || true; } | awk '{s+=$1} END {print s+0}'; }
py_passed=$(count passed)
py_failed=$(count 'failed|errors?')
if [ "$py_passed" -eq 0 ]; then status=1; fi
passed=$((passed + py_passed))
failed=$((failed + py_failed))
rm -f "$log" "$pylog"
echo "tests: $passed passed, $failed failed"
exit "$status"
