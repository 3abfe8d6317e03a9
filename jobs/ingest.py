"""spark-submit entry point for the ingest stage.

    spark-submit --jars "$DATAPREP_DELTA_JARS/*.jar" jobs/ingest.py --config my.yaml [--source NAME]

The `pipelines` package must be importable by the driver and the executors (`pip install` the wheel on the cluster,
or pass it with `--py-files`). Master, memory and packages come from spark-submit; the config's `spark:` section is
only used by the embedded local session.
"""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
