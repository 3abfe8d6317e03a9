#!/usr/bin/env bash
# The whole test suite (lint + pytest) on real local Spark, Delta Lake and MLflow, then the trainer's tests in the
# PyTorch environment (torch and the transformers reference live there, apart from the Spark environment).
# Installs what it needs on first use (scripts/env.sh). Extra arguments go to the main pytest run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_torch_env || { echo "[env] installing the PyTorch environment failed (see above)" >&2; exit 1; }
cd "$DATAPREP_REPO"
ruff check pipelines trainer tests bench jobs notebooks
# The reliability tests spend their time waiting on pipeline runs in processes of their own (killed, concurrent,
# hostile-input runs), so they run beside the rest of the suite; their report follows it.
reliability_log="$(mktemp)"
python -m pytest -q -p no:cacheprovider tests/test_reliability.py tests/test_hostile_input.py >"$reliability_log" 2>&1 &
reliability=$!
python -m pytest -q "$@" tests --ignore=tests/trainer --ignore=tests/test_reliability.py \
  --ignore=tests/test_hostile_input.py
reliability_status=0
wait "$reliability" || reliability_status=$?
cat "$reliability_log"
[ "$reliability_status" -eq 0 ] || { echo "reliability tests failed" >&2; exit 1; }
"$DATAPREP_TORCH_PYTHON" -m pytest -q --noconftest -p no:cacheprovider tests/trainer
