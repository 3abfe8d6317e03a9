# Databricks notebook source
# MAGIC %md
# MAGIC # Inspect a curriculum mixture and its manifest
# MAGIC Per stage: requested against realised tokens per component (and any shortfall), the Delta versions the stage
# MAGIC read, its shards, and the first sample decoded back to text.

# COMMAND ----------

import json
import os

import pandas as pd

from dataprep.notebook import Notebook
from pipelines.mds.format import iter_samples
from pipelines.mds.mixes import load_mix
from pipelines.mds.verify import verify
from pipelines.tokenize.tokenizer import encoding

notebook = Notebook(globals())
config = notebook.config()
mix = load_mix(notebook.widget("mix", config.mds.mix or "mixes/demo.yaml"))
stages = [os.path.join(config.mds.output, mix.name, stage.name) for stage in mix.stages]

# COMMAND ----------

for directory in stages:
    with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    print(f"stage {manifest['stage']['name']}: {manifest['samples']} samples, read {manifest['delta_versions']}")
    columns = ["name", "requested", "realised", "shortfall", "full_epochs", "documents_used"]
    notebook.show(pd.DataFrame(manifest["components"])[columns])

# COMMAND ----------

for directory in stages:
    result = verify(directory)
    print(result.format())
    first = next(iter_samples(directory))
    print(repr(encoding().decode(first[:200].tolist()))[:600])
