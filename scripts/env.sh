#!/usr/bin/env bash
# Creates (once) and activates the cached environment every command of this project runs in.
#
# Sourced by scripts/demo.sh and scripts/test.sh. Idempotent: a finished environment is keyed by the hash of the
# requirement files and the Python version, and is reused as is; an interrupted install is redone from scratch.
# What it holds:
#   - a virtualenv with the pinned Python packages and this project installed editable;
#   - the two Delta Lake JARs, fetched from Maven Central with `mvn`, so that Spark never resolves packages at
#     session start (which needs Ivy and the network). DATAPREP_DELTA_JARS tells the session factory where they are;
#   - on request (`ensure_s3a_jars`: the tests, a session on s3a://), Hadoop's S3 connector JARs (hadoop-aws and the
#     AWS SDK bundle it is built against, ~560 MB); DATAPREP_S3A_JARS says where they are, and an embedded session
#     adds them to spark.jars.
set -euo pipefail

DATAPREP_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATAPREP_CACHE="${DATAPREP_CACHE:-$HOME/.cache/dataprep}"
PYTHON="${PYTHON:-python3}"
DELTA_VERSION="4.0.1"
DELTA_SCALA="2.13"
# hadoop-aws must match the hadoop-client pyspark ships (pyspark/jars/hadoop-client-*-3.4.1.jar), and the SDK bundle
# must be the one that hadoop-aws release was built and tested against (its pom names it).
HADOOP_VERSION="3.4.1"
AWS_SDK_BUNDLE_VERSION="2.24.6"

_requirements_key() {
  cat "$DATAPREP_REPO"/requirements/*.txt | sha256sum | cut -c1-12
}

_ensure_venv() {
  local py_version key venv
  py_version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  key="$(_requirements_key)"
  venv="$DATAPREP_CACHE/venv-py$py_version-$key"
  if [ ! -f "$venv/.complete" ]; then
    echo "[env] creating $venv (first run only; a few minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$DATAPREP_CACHE"
    "$PYTHON" -m venv "$venv"
    # Each step is checked explicitly: `set -e` does not hold when a caller sources this file inside `a && b`.
    "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    "$venv/bin/python" -m pip install --quiet -r "$DATAPREP_REPO/requirements/test.txt" || return 1
    "$venv/bin/python" -m pip install --quiet --no-deps -r "$DATAPREP_REPO/requirements/no-deps.txt" || return 1
    touch "$venv/.complete"
  fi
  # The editable install is cheap and points at whichever checkout sources this script (CI clones elsewhere); it is
  # redone when setup.py changed (packages, entry points), which it reads only at install time.
  if [ ! -x "$venv/bin/dataprep" ] || ! cmp -s "$DATAPREP_REPO/setup.py" "$venv/editable-setup.py" \
    || ! (cd / && "$venv/bin/python" -c 'import dataprep, os, sys; sys.exit(0 if os.path.dirname(os.path.dirname(dataprep.__file__)) == sys.argv[1] else 1)' "$DATAPREP_REPO" 2>/dev/null); then
    "$venv/bin/python" -m pip install --quiet --no-deps -e "$DATAPREP_REPO" >"$venv/editable-install.log" 2>&1 \
      || { cat "$venv/editable-install.log" >&2; return 1; }
    cp "$DATAPREP_REPO/setup.py" "$venv/editable-setup.py"
  fi
  DATAPREP_VENV="$venv"
}

_ensure_delta_jars() {
  local dir="$DATAPREP_CACHE/jars/delta-$DELTA_VERSION"
  if [ ! -f "$dir/.complete" ]; then
    command -v mvn >/dev/null || { echo "[env] mvn not found: install Maven (apt-get install maven) to fetch the Delta JARs" >&2; exit 1; }
    echo "[env] fetching Delta Lake $DELTA_VERSION JARs into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    local artifact
    for artifact in "io.delta:delta-spark_$DELTA_SCALA:$DELTA_VERSION" "io.delta:delta-storage:$DELTA_VERSION"; do
      mvn --batch-mode --quiet dependency:copy -Dartifact="$artifact" -DoutputDirectory="$dir" >&2 || return 1
    done
    touch "$dir/.complete"
  fi
  export DATAPREP_DELTA_JARS="$dir"
}

ensure_s3a_jars() {
  local dir="$DATAPREP_CACHE/jars/s3a-$HADOOP_VERSION"
  # Downloaded beside the final directory and renamed only once both JARs are in: the SDK bundle is ~560 MB, and an
  # interrupted fetch leaves only the .partial directory, which the next run discards and fetches again.
  if [ ! -d "$dir" ]; then
    command -v mvn >/dev/null || { echo "[env] mvn not found: install Maven (apt-get install maven) to fetch the s3a JARs" >&2; exit 1; }
    echo "[env] fetching hadoop-aws $HADOOP_VERSION and the AWS SDK bundle into $dir (first run only; ~560 MB)" >&2
    local partial="$dir.partial"
    rm -rf "$partial"
    mkdir -p "$partial"
    local artifact
    for artifact in "org.apache.hadoop:hadoop-aws:$HADOOP_VERSION" "software.amazon.awssdk:bundle:$AWS_SDK_BUNDLE_VERSION"; do
      mvn --batch-mode --quiet --strict-checksums dependency:copy -Dartifact="$artifact" -DoutputDirectory="$partial" >&2 || return 1
    done
    mv "$partial" "$dir" || return 1
  fi
  export DATAPREP_S3A_JARS="$dir"
}

# The PyTorch environment (requirements/torch/): torch for the trainer, and the test-only references that pin older
# stacks (mosaicml-streaming, transformers 4.57). Large (~5 GB with torch's CUDA wheels), so separate and only built
# for what needs it (scripts/test.sh); this project is put on its path with a .pth file, no install.
ensure_torch_env() {
  local py_version key venv
  py_version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  key="$(sha256sum "$DATAPREP_REPO/requirements/torch/requirements.txt" | cut -c1-12)"
  venv="$DATAPREP_CACHE/torch-py$py_version-$key"
  if [ ! -f "$venv/.complete" ]; then
    echo "[env] creating $venv (first run only; several minutes, ~5 GB)" >&2
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    "$venv/bin/python" -m pip install --quiet -r "$DATAPREP_REPO/requirements/torch/requirements.txt" || return 1
    touch "$venv/.complete"
  fi
  "$venv/bin/python" -c 'import site, sys; open(site.getsitepackages()[0] + "/dataprep.pth", "w").write(sys.argv[1] + "\n")' "$DATAPREP_REPO"
  export DATAPREP_TORCH_PYTHON="$venv/bin/python"
}

_ensure_venv || { echo "[env] installing the Python environment failed (see above)" >&2; return 1 2>/dev/null || exit 1; }
_ensure_delta_jars || { echo "[env] fetching the Delta JARs failed (see above)" >&2; return 1 2>/dev/null || exit 1; }
export PATH="$DATAPREP_VENV/bin:$PATH"
export DATAPREP_VENV DATAPREP_REPO
