"""LLM pretraining data factory on Spark + Delta Lake."""
