"""Cached virtualenvs for the libraries we benchmark against, kept apart from the project's own environment."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def peer_python(name: str) -> str:
    """The python of a virtualenv holding bench/peers/<name>.txt, created on first use."""
    requirements = os.path.join(HERE, "peers", f"{name}.txt")
    with open(requirements, "rb") as handle:
        key = hashlib.sha256(handle.read()).hexdigest()[:12]
    cache = os.environ.get("DATAPREP_CACHE", os.path.expanduser("~/.cache/dataprep"))
    venv = os.path.join(cache, f"peer-{name}-{key}")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, ".complete")):
        print(f"[bench] creating {venv} for {name} (first run only)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", requirements], check=True)
        open(os.path.join(venv, ".complete"), "w").close()
    return python


def run_peer_script(name: str, script: str, texts: list[str]) -> dict:
    """Runs bench/<script> in the peer's environment on the texts (as JSONL) and returns the JSON it prints."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}) + "\n")
    try:
        command = [peer_python(name), os.path.join(HERE, script), handle.name]
        return json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    finally:
        os.unlink(handle.name)
