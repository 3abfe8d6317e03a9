# Databricks notebook source
# MAGIC %md
# MAGIC # Inspect near-duplicate clusters
# MAGIC The cluster-size distribution of `silver.dedup`, and the members of the largest clusters side by side: the
# MAGIC kept documents first, then each removed one with `duplicate_of`, the kept document it is a near duplicate of.
# MAGIC A cluster is a family (connected by near-duplicate edges, so its ends may differ more than the threshold) and
# MAGIC can keep several documents: a document is removed only when a kept one is its near duplicate.

# COMMAND ----------

from pyspark.sql import functions as F

from dataprep.notebook import Notebook
from pipelines.lakehouse import Lakehouse

notebook = Notebook(globals())
config = notebook.config()
lakehouse = Lakehouse(notebook.spark(config), config.lakehouse)
dedup = lakehouse.table("silver.dedup").read()
documents = lakehouse.table("silver.documents").read().select("doc_id", "source", "locator", "text", "quality_score")

# COMMAND ----------

sizes = dedup.select("cluster_id", "cluster_size").distinct().groupBy("cluster_size").count().orderBy("cluster_size")
notebook.show(sizes)
removed = dedup.agg(F.avg((~F.col("keep")).cast("double")).alias("removed_share")).first()["removed_share"]
print(f"removed as near duplicates: {removed:.2%} of the documents the filter kept")

# COMMAND ----------

largest = dedup.where(F.col("cluster_size") > 1).select("cluster_id", "cluster_size").distinct()
top = largest.orderBy(F.desc("cluster_size"), "cluster_id").limit(int(notebook.widget("clusters", "3")))
members = (
    dedup.join(top.select("cluster_id"), "cluster_id")
    .join(documents, "doc_id")
    .select(
        "cluster_id",
        "keep",
        "duplicate_of",
        "source",
        "locator",
        "quality_score",
        F.substring("text", 1, 160).alias("text_head"),
    )
    .orderBy("cluster_id", F.desc("keep"), "locator")
)
notebook.show(members, rows=40)
