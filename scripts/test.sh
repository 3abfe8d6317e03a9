#!/usr/bin/env bash
# The whole test suite (lint + pytest) on real local Spark, Delta Lake and MLflow.
# Installs what it needs on first use (scripts/env.sh). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_torch_env || { echo "[env] installing the PyTorch environment failed (see above)" >&2; exit 1; }
cd "$DATAPREP_REPO"
ruff check pipelines tests bench jobs
python -m pytest -q "$@" tests
