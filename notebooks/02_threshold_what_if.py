# Databricks notebook source
# MAGIC %md
# MAGIC # What if a threshold changed?
# MAGIC Re-applies the rules to the stored signals with one threshold changed and reports what would flip, without
# MAGIC recomputing any signal or writing anything (`redecide` in dry-run mode). Apply a change for real with
# MAGIC `dataprep redecide --config ...` after editing the config.

# COMMAND ----------

import dataclasses

from dataprep.notebook import Notebook
from pipelines.filter.stage import redecide
from pipelines.lakehouse import Lakehouse

notebook = Notebook(globals())
config = notebook.config()
spark = notebook.spark(config)
rule_name = notebook.widget("rule", "gopher_word_count")
new_min = float(notebook.widget("min", "30"))

# COMMAND ----------

rules = tuple(
    dataclasses.replace(rule, min=new_min) if rule.name == rule_name else rule for rule in config.filter.rules
)
assert any(rule.name == rule_name for rule in rules), f"no rule named {rule_name}"
what_if = dataclasses.replace(config.filter, rules=rules)
to_drop, to_keep, reasons = redecide(Lakehouse(spark, config.lakehouse), what_if, dry_run=True)
print(f"{rule_name}.min = {new_min}: {to_drop} kept documents would be dropped, {to_keep} dropped ones kept")
notebook.show(sorted(reasons.items(), key=lambda item: -item[1])[:15])
