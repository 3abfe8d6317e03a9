"""The data stages of the LLM pretraining data factory on Spark + Delta Lake, and what they share (config sections,
table declarations, the stage registry, the lakehouse, MLflow bookkeeping). The composition on top of it (the whole
config, the runner, the command line) is the `dataprep` package."""
