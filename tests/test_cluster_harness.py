"""The cluster harness (tests/cluster_harness.py) behaves like the machines it stands in for: tables go to S3 through
s3a, tasks run in the workers' processes and cannot see the driver's files, a job outlives a worker SIGKILLed in its
middle, and nothing the harness started outlives it.

One cluster serves the module. Its driver runs in a process of its own (this file run as a script): a process has
one SparkContext, and the suite's shared local session is usually already running in this one. The driver reports
what it saw as `EVENT {json}` lines on stdout; this side kills the worker when told the job is running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import pytest
from cluster_harness import (
    cluster_session,
    cluster_spark_conf,
    kill_session,
    s3_server,
    session_members,
    standalone_cluster,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = "s3a://bucket/table"
SLOW_TASKS = 12
SLOW_TASK_S = 0.5
DRIVER_TIMEOUT_S = 150


@dataclass
class ClusterRun:
    events: dict[str, dict]  # the driver's reports, by event name
    worker_sessions: list[int]  # the session id of each worker: its leader's pid
    alive_after_kill: int  # workers the master counted ALIVE once the job was over
    sessions: list[int]  # every session the harness and the test started: servers, workers, driver
    pids_seen: set[int]  # every process the run reported: those sessions' leaders, executors, Python workers


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> ClusterRun:
    directory = tmp_path_factory.mktemp("cluster")
    driver_tmp_file = directory / "driver-only.txt"
    driver_tmp_file.write_text("written on the driver's side")
    with (
        s3_server() as s3,
        standalone_cluster(workers=2, hidden_paths=[REPO, tempfile.gettempdir()], env=s3.env) as cluster,
    ):
        s3.create_bucket("bucket")
        conf = {
            **cluster_spark_conf(cluster, s3.endpoint, executor_memory="1g", short_lived=True),
            "spark.sql.shuffle.partitions": "2",
            "spark.databricks.delta.snapshotPartitions": "1",
        }
        driver_env = {**os.environ, **s3.env, "SPARK_LOCAL_IP": "127.0.0.1"}
        events, driver = run_driver(conf, driver_env, str(driver_tmp_file), directory / "driver.log", cluster)
        alive_after_kill = cluster.alive_workers()
    worker_sessions = [worker.pid for worker in cluster.workers]
    sessions = [s3.process.pid, cluster.master.pid, *worker_sessions, driver.pid]
    pids_seen = set(sessions) | {pid for task in events["worker_view"]["tasks"] for pid in task["process_chain"]}
    return ClusterRun(events, worker_sessions, alive_after_kill, sessions, pids_seen)


def run_driver(conf: dict, env: dict, driver_tmp_file: str, log_path, cluster) -> tuple[dict, subprocess.Popen]:
    """Runs this file as the driver; kills worker 0 when it reports the slow job running. Returns its reports."""
    with open(log_path, "wb") as log:
        driver = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), json.dumps(conf), driver_tmp_file],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, text=True, start_new_session=True,
        )  # fmt: skip
    watchdog = threading.Timer(DRIVER_TIMEOUT_S, driver.kill)
    watchdog.start()
    events = {}
    try:
        for line in driver.stdout:
            if not line.startswith("EVENT "):
                continue
            event = json.loads(line[len("EVENT ") :])
            events[event["event"]] = event
            if event["event"] == "slow_job_running":
                cluster.kill_worker(0)
                driver.stdin.write("killed\n")
                driver.stdin.flush()
        driver.wait()
        executors = "\n".join(cluster.executor_logs(i)[-3000:] for i in range(len(cluster.workers)))
    finally:
        watchdog.cancel()
        kill_session(driver)  # its JVM too, when it failed
    assert driver.returncode == 0, f"the driver failed; its log:\n{log_path.read_text()[-5000:]}\n{executors}"
    return events, driver


def test_a_delta_table_written_through_s3a_reads_back(cluster_run):
    assert cluster_run.events["delta"] == {"event": "delta", "rows": 1000, "sum": sum(range(1000))}


def test_tasks_run_inside_the_workers_not_the_driver(cluster_run):
    tasks = cluster_run.events["worker_view"]["tasks"]
    assert {task["session"] for task in tasks} == set(cluster_run.worker_sessions)  # both workers got tasks
    assert cluster_run.events["session"]["driver_pid"] not in {pid for task in tasks for pid in task["process_chain"]}
    assert {task["python"] for task in tasks} == {sys.executable}  # the driver's choice, not python3 from PATH


def test_workers_cannot_see_the_drivers_files(cluster_run):
    for task in cluster_run.events["worker_view"]["tasks"]:
        assert task["sees_driver_tmp_file"] is False
        assert task["sees_repository"] is False
    assert cluster_run.events["worker_view"]["driver_sees_both"] is True


def test_a_job_survives_a_worker_killed_in_its_middle(cluster_run):
    slow = cluster_run.events["slow_job"]
    assert 0 < slow["tasks_done_at_kill"] < slow["tasks"]
    groups = {key: values for key, values in slow["groups"]}
    assert {key: sorted(n for n, _ in values) for key, values in groups.items()} == {
        key: [n for n in range(SLOW_TASKS) if n % 5 == key] for key in range(5)
    }
    # What the killed worker had computed was lost with it and computed again on the survivor.
    assert {session for values in groups.values() for _, session in values} == {cluster_run.worker_sessions[1]}
    assert cluster_run.alive_after_kill == 1


def test_nothing_started_outlives_the_harness(cluster_run):
    assert all(session_members(session) == [] for session in cluster_run.sessions)
    assert [pid for pid in cluster_run.pids_seen if os.path.exists(f"/proc/{pid}")] == []


def test_a_session_is_refused_where_another_is_running(spark):
    with pytest.raises(RuntimeError, match="already running in this process"), cluster_session({}):
        pass


def test_hiding_what_the_workers_run_on_is_refused():
    with pytest.raises(ValueError, match="the Python environment"), standalone_cluster(hidden_paths=[sys.prefix]):
        pass


# --- the driver: this file run as a script ----------------------------------------------------------------------


def report(event: str, **fields) -> None:
    print("EVENT " + json.dumps({"event": event, **fields}), flush=True)


def look_around(driver_tmp_file: str, repository: str):
    """A task's view of its machine (self-contained: executors cannot import anything from tests/)."""

    def view(_partition):
        import os
        import sys
        import time

        time.sleep(0.2)  # long enough for both executors to get a task
        with open(f"/proc/{os.getppid()}/stat") as handle:
            daemon_parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        yield {
            "session": os.getsid(0),
            "python": sys.executable,
            # The Python worker, PySpark's daemon that forked it, and the executor JVM.
            "process_chain": [os.getpid(), os.getppid(), daemon_parent],
            "sees_driver_tmp_file": os.path.exists(driver_tmp_file),
            "sees_repository": os.path.exists(os.path.join(repository, "setup.py")),
        }

    return view


def slowly_keyed(number: int) -> tuple[int, tuple[int, int]]:
    """(key, (number, session of the worker that computed it)), after a pause: a task that takes a while."""
    import os
    import time

    time.sleep(SLOW_TASK_S)
    return number % 5, (number, os.getsid(0))


def tasks_done(spark, job_group: str) -> int:
    tracker = spark.sparkContext.statusTracker()
    jobs = [tracker.getJobInfo(job_id) for job_id in tracker.getJobIdsForGroup(job_group)]
    stages = [tracker.getStageInfo(stage_id) for job in jobs if job for stage_id in job.stageIds]
    return sum(stage.numCompletedTasks for stage in stages if stage)


def run_slow_job_while_a_worker_dies(spark) -> dict:
    """Many slow tasks, then a shuffle (so what the lost worker computed must be computed again). Once a few tasks
    are done, asks for a worker to be killed and counts the tasks done when the kill is confirmed."""
    outcome: dict = {}

    def job() -> None:
        context = spark.sparkContext
        context.setJobGroup("slow", "tasks that sleep")
        keyed = context.parallelize(range(SLOW_TASKS), SLOW_TASKS).map(slowly_keyed)
        outcome["groups"] = sorted(keyed.groupByKey().mapValues(sorted).collect())

    runner = threading.Thread(target=job)
    runner.start()
    while tasks_done(spark, "slow") < 2 and runner.is_alive():
        time.sleep(0.05)
    report("slow_job_running")
    sys.stdin.readline()  # the other side's "killed"
    done_at_kill = tasks_done(spark, "slow")
    runner.join()
    return {"tasks": SLOW_TASKS, "tasks_done_at_kill": done_at_kill, "groups": outcome["groups"]}


def drive(conf_json: str, driver_tmp_file: str) -> None:
    with cluster_session(json.loads(conf_json)) as spark:
        spark.sparkContext.setLogLevel("WARN")
        report("session", driver_pid=os.getpid())

        view = look_around(driver_tmp_file, REPO)
        tasks = spark.sparkContext.parallelize(range(4), 4).mapPartitions(view).collect()
        driver_sees_both = os.path.exists(driver_tmp_file) and os.path.exists(os.path.join(REPO, "setup.py"))
        report("worker_view", tasks=tasks, driver_sees_both=driver_sees_both)

        spark.range(1000).write.format("delta").save(TABLE)
        rows, total = spark.read.format("delta").load(TABLE).selectExpr("count(*)", "sum(id)").first()
        report("delta", rows=rows, sum=total)

        report("slow_job", **run_slow_job_while_a_worker_dies(spark))


if __name__ == "__main__":
    drive(*sys.argv[1:])
