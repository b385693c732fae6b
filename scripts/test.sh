#!/usr/bin/env bash
# The test command (README, .ci/run): static checks, then the whole pytest suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not docker" -x).
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin
status=0
paths=()
for p in src ci pipeline.py bench examples; do [ -e "$p" ] && paths+=("$p"); done
"$py/ruff" check "${paths[@]}" || status=1
"$py/pyright" || status=1
"$py/pytest" "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "[test] pytest collected no tests: that is a failure of this repository" >&2
  rc=1
fi
[ "$rc" = 0 ] || status=$rc
exit "$status"
