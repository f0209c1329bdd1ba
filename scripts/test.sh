#!/usr/bin/env bash
# Runs every test: unit tests, and the integration tests on SQLite and on
# PostgreSQL. Without TEST_DATABASE_URL a throwaway PostgreSQL cluster is
# started for the run (see pg-throwaway.sh); PostgreSQL tests never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  # shellcheck source=scripts/pg-throwaway.sh
  source scripts/pg-throwaway.sh
fi
cargo test --workspace --locked "$@"
