#!/usr/bin/env bash
# The main job, end to end, on the embedded default (local Spark + local Delta lakehouse + local MLflow store).
# Installs what it needs on first use (scripts/env.sh). Extra arguments go to `dataprep demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$DATAPREP_REPO"
exec dataprep demo "$@"
