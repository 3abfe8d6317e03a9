#!/usr/bin/env bash
# The main job, end to end, on the embedded default (local Spark + local Delta lakehouse + local MLflow store).
# Installs what it needs on first use (scripts/env.sh). Extra arguments go to `dataprep demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# The demo ends by training the tiny MoE model, in the PyTorch environment (built on first use, ~5 GB).
ensure_torch_env || { echo "[env] installing the PyTorch environment failed (see above)" >&2; exit 1; }
cd "$DATAPREP_REPO"
exec dataprep demo "$@"
