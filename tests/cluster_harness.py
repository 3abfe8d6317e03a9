"""A real Spark cluster on one machine, for tests and benchmarks: a local S3 server and a standalone cluster whose
workers cannot see the driver's files.

A `local[*]` session shares one process and one filesystem with its driver, so it hides the bugs that only a cluster
shows: a task that opens a path only the driver has, state kept in the driver's Python, output that is wrong when an
executor dies and its tasks run again. Here:
- `s3_server()` runs moto's S3 server on loopback; tables go through s3a, as they do in production;
- `standalone_cluster()` runs a Spark Master and Workers as separate process sessions; each Worker lives in its own
  mount namespace with an empty tmpfs over the driver's paths (the checkout, /tmp), and `kill_worker(i)` SIGKILLs a
  Worker with its executors and Python workers, as when a machine dies;
- `cluster_spark_conf()` and `cluster_session()` build a driver for them.

Linux only, as root (`unshare --mount`). The s3a and Delta JARs come from DATAPREP_S3A_JARS and DATAPREP_DELTA_JARS
(scripts/env.sh fills both).

    with s3_server() as s3, standalone_cluster(hidden_paths=[REPO, "/tmp"], env=s3.env) as cluster:
        s3.create_bucket("lake")
        os.environ.update(s3.env)  # the driver's s3a reads its credentials from the environment too
        with cluster_session(cluster_spark_conf(cluster, s3.endpoint)) as spark:
            spark.range(10).write.format("delta").save("s3a://lake/t")
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import pyspark

SPARK_HOME = os.path.dirname(pyspark.__file__)
VENV_BIN = os.path.dirname(sys.executable)
STARTUP_TIMEOUT_S = 90.0
# For JVMs that live seconds, on a machine of two cores: the C2 compiler and the parallel GC threads cost more CPU
# than they win back (measured: a Delta write-and-read test 51 s -> 32 s).
SHORT_LIVED_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
STOP_GRACE_S = 10.0
# moto accepts any credentials. Setting all of them, and pointing the profile files at nothing, keeps every AWS client
# (boto3, pyarrow, the SDK inside s3a) from picking up real ones from the machine (~/.aws, instance metadata).
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    """A TCP port nothing listens on right now on loopback (another process may still take it before we do)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- process sessions -------------------------------------------------------------------------------------------
# Every server here starts as the leader of a new session. A session, unlike a process group, also holds the
# children that move to a group of their own (PySpark's daemon does `setpgid(0, 0)`), so "kill the session" is
# "kill everything this server started".


def _start_session(command: list[str], log_path: str, env: Mapping[str, str], cwd: str = "/") -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )


def session_members(session_id: int) -> list[int]:
    """Pids of the live (not zombie) processes in the session `session_id`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:  # exited while we looked
            continue
        # The command name (in parentheses) may hold spaces; the fields after it are: state ppid pgrp session ...
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]
        if int(session) == session_id and state != "Z":
            members.append(int(entry))
    return members


def _signal_session(session_id: int, signum: int) -> None:
    for pid in session_members(session_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILLs every process of the session `process` leads, at once, and reaps the leader."""
    # Kill again until nothing is left: a process may fork between the listing and the signal.
    deadline = time.monotonic() + STOP_GRACE_S
    while session_members(process.pid) and time.monotonic() < deadline:
        _signal_session(process.pid, signal.SIGKILL)
        time.sleep(0.05)
    process.wait(timeout=STOP_GRACE_S)
    _assert_session_gone(process)


def stop_sessions(processes: Iterable[subprocess.Popen]) -> None:
    """SIGTERM to every process of the sessions `processes` lead (JVMs run their shutdown hooks), all at once; then
    SIGKILL for what is left after a grace time. Raises, once all were stopped, if anything survived."""
    processes = list(processes)
    for process in processes:
        _signal_session(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(session_members(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    failures = []
    for process in processes:
        try:
            kill_session(process)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            failures.append(str(error))
    if failures:
        raise RuntimeError("; ".join(failures))


def _assert_session_gone(process: subprocess.Popen) -> None:
    left = session_members(process.pid)
    if left:
        raise RuntimeError(f"processes {left} of the session of {process.args!r} survived SIGKILL")


def _log_tail(path: str, lines: int = 40) -> str:
    with open(path, errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])


@contextlib.contextmanager
def _log_directory(log_dir: str | None) -> Iterator[str]:
    """`log_dir` as given (kept for the caller), else a temporary directory removed afterwards."""
    if log_dir is not None:
        os.makedirs(log_dir, exist_ok=True)
        yield log_dir
        return
    with tempfile.TemporaryDirectory(prefix="dataprep-cluster-") as directory:
        yield directory


def _wait_until(ready, what: str, processes: Iterable[subprocess.Popen], log_paths: Iterable[str]) -> None:
    """Polls `ready()` until true; fails early, with the logs, when one of `processes` exits or time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        dead = [process.args for process in processes if process.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{dead} exited" if dead else f"not ready after {STARTUP_TIMEOUT_S:.0f} s"
            logs = "\n".join(f"--- {path}\n{_log_tail(path)}" for path in log_paths)
            raise RuntimeError(f"{what}: {reason}\n{logs}")
        time.sleep(0.2)


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


# --- S3 ---------------------------------------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # what an AWS client (boto3, pyarrow, s3a's environment provider) needs to reach it
    process: subprocess.Popen
    log_path: str

    def create_bucket(self, name: str) -> None:
        import boto3  # moto[server] depends on it

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=name)


@contextlib.contextmanager
def s3_server(log_dir: str | None = None) -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, stopped (its whole session) on exit. State lives in its memory only:
    every server starts empty."""
    moto_server = os.path.join(VENV_BIN, "moto_server")
    if not os.path.exists(moto_server):
        raise RuntimeError(f"{moto_server} not found: install requirements/test.txt (moto[server])")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with _log_directory(log_dir) as logs:
        log_path = os.path.join(logs, "moto.log")
        process = _start_session([moto_server, "-H", "127.0.0.1", "-p", str(port)], log_path, os.environ)
        try:
            _wait_until(
                lambda: _get_json(f"{endpoint}/moto-api/data.json") is not None, "moto_server", [process], [log_path]
            )
            yield S3Server(endpoint, {**DUMMY_AWS_ENV, "AWS_ENDPOINT_URL": endpoint}, process, log_path)
        finally:
            stop_sessions([process])


# --- Spark configuration ----------------------------------------------------------------------------------------


def _jars_in(variable: str, expected: int) -> list[str]:
    directory = os.environ.get(variable)
    jars = sorted(glob.glob(os.path.join(directory, "*.jar"))) if directory else []
    if len(jars) < expected:
        raise RuntimeError(f"{variable}={directory!r} should hold {expected} JARs, found {jars}: source scripts/env.sh")
    return jars


def s3a_jars() -> list[str]:
    """hadoop-aws and the AWS SDK bundle, from DATAPREP_S3A_JARS."""
    return _jars_in("DATAPREP_S3A_JARS", 2)


def delta_jars() -> list[str]:
    """delta-spark and delta-storage, from DATAPREP_DELTA_JARS."""
    return _jars_in("DATAPREP_DELTA_JARS", 2)


def s3a_spark_conf(endpoint: str) -> dict[str, str]:
    """Spark conf for s3a:// (and s3://) paths on the S3 server at `endpoint`.

    `spark.jars` holds the s3a JARs only. Spark keeps one value per key, so whoever also ships other JARs (Delta's)
    must join them into one comma-separated value, as `cluster_spark_conf` does; a second `spark.jars` replaces the
    first. Credentials are not in the conf: s3a reads AWS_ACCESS_KEY_ID etc. from the environment of each JVM, so
    the driver's and the workers' environments need `S3Server.env`.
    """
    return {
        # Through spark.jars, not extraClassPath: the SDK bundle carries its own unshaded slf4j 1.7 and netty, and
        # extraClassPath puts it *before* Spark's own JARs (Spark's logging then goes silent). spark.jars loads it in
        # a child class loader where Spark's classes win.
        "spark.jars": ",".join(s3a_jars()),
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": DUMMY_AWS_ENV["AWS_REGION"],
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider": (
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
        ),
        # s3:// is what Databricks and most configs write; the same connector serves it. The AbstractFileSystem entry
        # is for FileContext users (Delta's and streaming's checkpoint managers), which otherwise fall back with a
        # warning.
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        # A dead local server should fail a test in seconds, not after the SDK's default minutes of retries.
        "spark.hadoop.fs.s3a.attempts.maximum": "3",
        "spark.hadoop.fs.s3a.retry.limit": "3",
    }


def cluster_spark_conf(
    cluster: StandaloneCluster, s3_endpoint: str, executor_memory: str = "1g", short_lived: bool = False
) -> dict[str, str]:
    """Everything a driver needs for `cluster` and the S3 server at `s3_endpoint`: master, Delta, s3a, memory, the
    Python of the executors. `executor_memory` must fit in a worker's memory.

    `short_lived` gives the driver and executor JVMs SHORT_LIVED_JVM_OPTIONS (a test that runs for seconds finishes
    in about two thirds of the time; a benchmark leaves it off). They are the whole `extraJavaOptions`: a caller
    adding its own must join the strings.
    """
    from pipelines.spark import DELTA_SQL_CONF

    s3a = s3a_spark_conf(s3_endpoint)
    jvm = {
        "spark.driver.extraJavaOptions": SHORT_LIVED_JVM_OPTIONS,
        "spark.executor.extraJavaOptions": SHORT_LIVED_JVM_OPTIONS,
    }
    return {
        **(jvm if short_lived else {}),
        **DELTA_SQL_CONF,
        **s3a,
        "spark.master": cluster.master_url,
        "spark.jars": ",".join([*delta_jars(), s3a["spark.jars"]]),
        "spark.executor.memory": executor_memory,
        # Jobs start once every worker has its executor (standalone mode counts against spark.cores.max), so that
        # work is spread over all of them and killing one always hits a running job.
        "spark.cores.max": str(cluster.cores),
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
        # Executors run this interpreter (the venv's), not the first python3 on the workers' PATH. Honoured by
        # spark-submit and by `cluster_session`; a driver built otherwise must export PYSPARK_PYTHON itself.
        "spark.pyspark.python": sys.executable,
        # The executors call back to the driver: keep it on loopback, where the cluster listens.
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
    }


@contextlib.contextmanager
def cluster_session(
    conf: Mapping[str, str], app_name: str = "dataprep-cluster-test"
) -> Iterator[pyspark.sql.SparkSession]:
    """A new SparkSession with `conf`, stopped on exit (stop it before the cluster goes: executors that lose their
    driver linger until they notice).

    Refuses to run where a SparkContext is already active in this process: `getOrCreate` would hand that one back,
    silently keeping its master and JARs. A process has one SparkContext at a time (and keeps its JVM, with the
    first session's class path, after `stop`), so a driver for a cluster wants a process of its own.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is not None:
        active = SparkContext._active_spark_context.master
        raise RuntimeError(
            f"a SparkContext (master {active}) is already running in this process; stop it, or run the cluster's "
            "driver in a process of its own"
        )
    builder = SparkSession.builder.appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    with _environment(PYSPARK_PYTHON=conf.get("spark.pyspark.python")):
        session = builder.getOrCreate()
    try:
        yield session
    finally:
        session.stop()


@contextlib.contextmanager
def _environment(**variables: str | None) -> Iterator[None]:
    """os.environ with `variables` set (None: left as is), restored afterwards.

    For PYSPARK_PYTHON: PySpark picks the executors' interpreter from the driver's PYSPARK_PYTHON when the context
    starts (else `python3` from each worker's PATH); the conf key spark.pyspark.python counts only for a driver that
    spark-submit starts, not for a session built in Python."""
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update({name: value for name, value in variables.items() if value is not None})
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- standalone cluster -----------------------------------------------------------------------------------------


@dataclass
class StandaloneCluster:
    master_url: str  # spark://127.0.0.1:PORT
    master_web_url: str  # http://127.0.0.1:PORT, whose /json/ lists the workers
    master: subprocess.Popen
    workers: list[subprocess.Popen]  # each the leader of its session: the Worker JVM, its executors, their Pythons
    cores: int  # over all workers
    log_dir: str  # the Master's and Workers' logs
    work_dirs: list[str]  # each Worker's work dir, as that Worker sees it (executors' stdout and stderr are there)

    def executor_logs(self, index: int) -> str:
        """The stderr of worker `index`'s executors, while the worker lives: its work dir is in its own tmpfs,
        which goes with it, and this process reaches it through the worker's /proc/PID/root."""
        pattern = f"/proc/{self.workers[index].pid}/root{self.work_dirs[index]}/*/*/stderr"
        parts = []
        for path in sorted(glob.glob(pattern)):
            with open(path, errors="replace") as handle:
                parts.append(f"--- {path}\n{handle.read()}")
        return "\n".join(parts)

    def kill_worker(self, index: int) -> None:
        """SIGKILLs worker `index` with everything it started, at once: a machine dying mid-job, not a shutdown."""
        kill_session(self.workers[index])

    def alive_workers(self) -> int:
        """How many workers the master currently counts as ALIVE."""
        state = _get_json(f"{self.master_web_url}/json/")
        return 0 if state is None else sum(1 for worker in state.get("workers", []) if worker["state"] == "ALIVE")


def _spark_class(main_class: str, *args: str) -> list[str]:
    return [os.path.join(SPARK_HOME, "bin", "spark-class"), main_class, *args]


def _hideable_paths(hidden_paths: Iterable[str]) -> list[str]:
    """`hidden_paths` as absolute real paths, outermost first, those inside another dropped (already hidden); fails
    on a path a worker cannot do without."""
    needed = {"the Python environment": sys.prefix, "the Python installation": sys.base_prefix, "Spark": SPARK_HOME}
    java = shutil.which("java")
    if java:
        needed["Java"] = os.path.realpath(java)
    for variable in ("DATAPREP_S3A_JARS", "DATAPREP_DELTA_JARS"):
        if os.environ.get(variable):
            needed[variable] = os.environ[variable]
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in hidden_paths}, key=len):
        if not os.path.isdir(path):
            raise ValueError(f"hidden path {path!r} is not a directory: only directories can be hidden")
        for name, needed_path in needed.items():
            if os.path.commonpath([path, os.path.realpath(needed_path)]) == path:
                raise ValueError(f"hidden path {path!r} holds {name} ({needed_path}), which the workers need")
        if not any(os.path.commonpath([path, outer]) == outer for outer in kept):
            kept.append(path)
    return kept


def worker_host(index: int) -> str:
    """The loopback address worker `index` and its executors use: 127.0.0.2, 127.0.0.3, ...

    One address per worker makes them different hosts to Spark, as machines are. On one shared address Spark takes
    them for executors of one machine and reads another executor's shuffle files straight from its disk, which here
    (private local dirs) fails with NoSuchFileException, and on a real cluster never happens.
    """
    return f"127.0.0.{index + 2}"


def _worker_command(
    master_url: str, host: str, hidden: list[str], private_dir: str, cores: int, memory: str
) -> list[str]:
    """The Worker, started in a mount namespace of its own where each hidden path is an empty tmpfs and
    `private_dir` a fresh one for its work dir and SPARK_LOCAL_DIRS."""
    # `--propagation private`: nothing mounted here shows outside. The namespace (and its tmpfs) goes away with
    # its last process.
    mounts = [f"mount -t tmpfs -o mode=1777 hidden {shlex.quote(path)}" for path in hidden]
    work_dir, local_dir = os.path.join(private_dir, "work"), os.path.join(private_dir, "local")
    worker = _spark_class(
        "org.apache.spark.deploy.worker.Worker", master_url, "--host", host, "--webui-port", "0",
        "--cores", str(cores), "--memory", memory, "--work-dir", work_dir,
    )  # fmt: skip
    script = " && ".join(
        [
            *mounts,
            # Created after the hidden mounts: `private_dir` may lie under one of them.
            f"mkdir -p {shlex.quote(private_dir)}",
            f"mount -t tmpfs -o mode=700 worker-private {shlex.quote(private_dir)}",
            f"mkdir {shlex.quote(work_dir)} {shlex.quote(local_dir)}",
            # A working directory under a hidden path would still show the files under the tmpfs.
            f"cd {shlex.quote(private_dir)}",
            f"exec {shlex.join(worker)}",
        ]
    )
    return ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", script]


@contextlib.contextmanager
def standalone_cluster(
    workers: int = 2,
    hidden_paths: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    cores_per_worker: int = 1,
    memory_per_worker: str = "2g",
    log_dir: str | None = None,
) -> Iterator[StandaloneCluster]:
    """A Spark standalone Master and `workers` Workers on loopback, yielded once the master counts them all ALIVE.

    Each Worker sees an empty tmpfs at every path of `hidden_paths` (the driver's local paths), and gets `env` on top
    of this process's environment (its executors inherit it: the AWS variables for s3a go here). Worker i and its
    executors are the host `worker_host(i)`; the Master is 127.0.0.1. Executors must not ask for more than
    `memory_per_worker`. On exit every process is stopped, and a survivor is an error. The daemons' logs go to
    `log_dir` (kept) or to a temporary directory (removed); the executors' stay in their worker's tmpfs
    (`executor_logs`).
    """
    if os.geteuid() != 0:
        raise RuntimeError("standalone_cluster hides paths with `unshare --mount`, which needs root")
    hidden = _hideable_paths(hidden_paths)
    master_port, web_port = free_port(), free_port()
    master_url = f"spark://127.0.0.1:{master_port}"
    master_web_url = f"http://127.0.0.1:{web_port}"
    daemon_env = {
        **os.environ,
        "SPARK_HOME": SPARK_HOME,
        "SPARK_LOCAL_IP": "127.0.0.1",
        # The Master and Worker daemons only book-keep (the executors get their own memory and JVM options): a small
        # heap, and the quick-starting JVM settings of SHORT_LIVED_JVM_OPTIONS.
        "SPARK_DAEMON_MEMORY": "512m",
        "SPARK_DAEMON_JAVA_OPTS": SHORT_LIVED_JVM_OPTIONS,
    }
    with _log_directory(log_dir) as logs, tempfile.TemporaryDirectory(prefix="dataprep-workers-") as mountpoints:
        started: list[subprocess.Popen] = []
        try:
            master = _start_session(
                _spark_class(
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(master_port),
                    "--webui-port",
                    str(web_port),
                ),
                os.path.join(logs, "master.log"),
                daemon_env,
            )
            started.append(master)
            worker_processes, work_dirs = [], []
            for index in range(workers):
                private_dir = os.path.join(mountpoints, f"worker-{index}")
                os.mkdir(private_dir)  # the mount point; the Worker mounts its own tmpfs over it
                host = worker_host(index)
                # Its own address and local dirs win over `env` and over this process's SPARK_LOCAL_IP (a local
                # session sets it): the executors, which inherit them, must bind there.
                worker_env = {
                    **daemon_env, **(env or {}), "SPARK_LOCAL_IP": host,
                    "SPARK_LOCAL_DIRS": os.path.join(private_dir, "local"),
                }  # fmt: skip
                work_dirs.append(os.path.join(private_dir, "work"))
                command = _worker_command(master_url, host, hidden, private_dir, cores_per_worker, memory_per_worker)
                worker_processes.append(_start_session(command, os.path.join(logs, f"worker-{index}.log"), worker_env))
                started.append(worker_processes[-1])
            cluster = StandaloneCluster(
                master_url, master_web_url, master, worker_processes, workers * cores_per_worker, logs, work_dirs
            )
            log_paths = sorted(glob.glob(os.path.join(logs, "*.log")))
            _wait_until(lambda: cluster.alive_workers() == workers, f"{workers} Spark workers", started, log_paths)
            yield cluster
        finally:
            stop_sessions(started)


# --- Spark Connect ----------------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def connect_server(log_dir: str | None = None, master: str = "local[2]", partitions: int = 2) -> Iterator[str]:
    """A Spark Connect server (the class pyspark's own JARs ship) with Delta, on a free loopback port, as Databricks
    serverless and standard access mode present one; yields its `sc://` address and stops its whole session on
    exit. Its Python workers run this interpreter (`spark.pyspark.python` of a server is its own business, as there)."""
    port = free_port()
    conf = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(partitions),
        # As the embedded session sets it (pipelines/spark.py): Delta rebuilds a table's state in 50 tasks otherwise,
        # on every snapshot of every tiny test table.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.driver.memory": "2g",
        "spark.driver.extraJavaOptions": f"-Duser.timezone=UTC {SHORT_LIVED_JVM_OPTIONS}",
    }
    command = [
        os.path.join(SPARK_HOME, "bin", "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master",
        master,
        "--jars",
        ",".join(delta_jars()),
        *[argument for key, value in conf.items() for argument in ("--conf", f"{key}={value}")],
    ]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    env.pop("SPARK_REMOTE", None)
    with _log_directory(log_dir) as logs:
        log_path = os.path.join(logs, "connect-server.log")
        process = _start_session(command, log_path, env)
        try:
            _wait_until(lambda: _port_open(port), "Spark Connect server", [process], [log_path])
            yield f"sc://127.0.0.1:{port}"
        finally:
            stop_sessions([process])
