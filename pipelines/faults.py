"""Failpoints: named places where a test can kill this process as a crash would, to prove restarts lose nothing.

`DATAPREP_FAILPOINT=<stage>.<step>` makes the process SIGKILL itself on entering that step (what came before is
committed, the step and the rest of the stage are not). Steps are those a stage times with `context.steps(...)`
(the stage names come from the registry, which the runner checks the variable against), plus `mds.publish`
(shards written, index and manifest not yet). Unset, a failpoint costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "DATAPREP_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
