# Databricks notebook source
# MAGIC %md
# MAGIC # Explore the corpus and its signals
# MAGIC What came in (bronze), what was quarantined and why, what the filter kept and dropped (with every rule that
# MAGIC fired), and how the quality signals are distributed. Set the `config` widget to your pipeline config, or the
# MAGIC `lakehouse` widget to a demo lakehouse.

# COMMAND ----------

from pyspark.sql import functions as F

from dataprep.notebook import Notebook
from pipelines.lakehouse import Lakehouse

notebook = Notebook(globals())
config = notebook.config()
lakehouse = Lakehouse(notebook.spark(config), config.lakehouse)
bronze = lakehouse.table("bronze.documents").read()
quarantine = lakehouse.table("bronze.quarantine").read()
silver = lakehouse.table("silver.documents").read()

# COMMAND ----------

# MAGIC %md ## Documents and quarantine by source

# COMMAND ----------

notebook.show(bronze.groupBy("source", "kind").agg(F.count("*").alias("documents"), F.sum("n_bytes").alias("bytes")))
notebook.show(quarantine.groupBy("source", "reason").count().orderBy(F.desc("count")))

# COMMAND ----------

# MAGIC %md ## Filter decisions: kept share by source and language, drops by rule

# COMMAND ----------

notebook.show(
    silver.groupBy("source", "language")
    .agg(F.count("*").alias("documents"), F.avg(F.col("keep").cast("double")).alias("kept_share"))
    .orderBy(F.desc("documents"))
)
drops = silver.select(F.explode("drop_reasons").alias("rule")).groupBy("rule").count().orderBy(F.desc("count"))
notebook.show(drops)

# COMMAND ----------

# MAGIC %md ## Signal distributions (quantiles over kept and dropped prose)

# COMMAND ----------

signals = ["gopher_words", "gopher_mean_word_length", "gopher_alpha_words", "fineweb_line_punct_ratio"]
prose = silver.where(F.col("kind") == "text")
quantiles = prose.select(
    "keep",
    *[F.col("signals").getItem(name).alias(name) for name in signals],
    F.col("quality_score"),
)
summary = quantiles.groupBy("keep").agg(
    *[F.percentile_approx(name, [0.1, 0.5, 0.9]).alias(name) for name in [*signals, "quality_score"]]
)
notebook.show(summary)
