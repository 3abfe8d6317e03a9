#!/usr/bin/env bash
# The whole test suite (lint + pytest) on real local Spark, Delta Lake and MLflow, then the trainer's tests in the
# PyTorch environment (torch and the transformers reference live there, apart from the Spark environment).
# Installs what it needs on first use (scripts/env.sh). Extra arguments go to the main pytest run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ensure_torch_env || { echo "[env] installing the PyTorch environment failed (see above)" >&2; exit 1; }
# The cluster tests write to a local S3 server through s3a.
ensure_s3a_jars || { echo "[env] fetching the s3a JARs failed (see above)" >&2; exit 1; }
cd "$DATAPREP_REPO"
ruff check dataprep pipelines trainer tests bench jobs notebooks
python -m pytest -q --durations=30 "$@" tests --ignore=tests/trainer
"$DATAPREP_TORCH_PYTHON" -m pytest -q -p no:cacheprovider tests/trainer
