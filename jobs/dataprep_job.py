"""spark-submit entry point for every stage: the `dataprep` command line under spark-submit.

    spark-submit --jars "$(ls $DATAPREP_DELTA_JARS/*.jar | paste -sd,)" jobs/dataprep_job.py run --config my.yaml
    spark-submit ... jobs/dataprep_job.py ingest --config my.yaml [--source NAME]
    spark-submit ... jobs/dataprep_job.py dedup --config my.yaml

The `dataprep`, `pipelines` and `trainer` packages must be importable by the driver and the executors
(`pip install` the wheel on the cluster, or pass it with `--py-files`). Master, memory and packages come from
spark-submit; the config's `spark:` section is only used by the embedded local session. The exit status is the
command's (2 bad input, 3 not reconciled).
"""

import sys

from dataprep.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
