"""The storage layer: every read and write that is not a Delta table goes through here. Inputs, the quality model,
MDS shards, index and manifest, checkpoints and staging cleanup all name their files with one string, a URI, that
means the same place to the driver, to every executor and to Spark's own readers and writers:

- a local path (`/data/x`, `file:///data/x`), including Databricks' FUSE mounts (`/Volumes/...`, `/dbfs/...`);
- `s3://bucket/key` (also spelt `s3a://` and `s3n://`, as Hadoop spells it): one store, whatever the spelling;
- `gs://bucket/key`, `abfss://container@account.dfs.core.windows.net/key`;
- `dbfs:/x`, which is `/dbfs/x` to Python on Databricks.

Built on `pyarrow.fs`: pyarrow is already how every stage moves data between Spark and Python, its S3, GCS and
Azure clients are C++ (no extra Python dependency on executors) and use each cloud's standard credential chain, and
its listing returns sizes page by page (1,000 keys per request on S3), so a big input directory is listed without a
request per file. Credentials are never passed here: the AWS/GCP/Azure provider chains find them, as Spark's
connectors do. What Spark's S3 connector is told about the endpoint (`spark.hadoop.fs.s3a.endpoint`, its SSL and
region settings) is read once on the driver into `Storage` and travels with the tasks, so Python and Spark reach
the same server.

Writes are whole-object: `write_bytes` and `upload` make a file appear complete or not at all (a temporary name and
a rename on local disks; a single PUT on object stores, which never shows a partial object). Nothing is ever renamed
on an object store.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")
S3_SCHEMES = ("s3", "s3a", "s3n")
OBJECT_STORE_SCHEMES = (*S3_SCHEMES, "gs", "gcs", "abfs", "abfss")
SUPPORTED_SCHEMES = (*OBJECT_STORE_SCHEMES, "file", "dbfs")
_GLOB_CHARACTERS = set("*?[")
_COPY_CHUNK = 8 * 1024 * 1024
# Reads of remote files go through a buffer this large: an object store answers each read with a request.
READ_BUFFER = 8 * 1024 * 1024


class StorageError(OSError):
    """An operation on a path failed; the message names the path and the operation."""


class UnsupportedPath(ValueError):
    """A path this layer cannot serve: an unknown scheme, a bucket that does not exist or cannot be listed."""


@dataclass(frozen=True)
class Entry:
    """A file found by a listing."""

    uri: str
    size: int
    problem: tuple[str, str] | None = None  # (reason, detail) for a local file that cannot be read as is


def scheme_of(uri: str) -> str | None:
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else None


def is_remote(uri: str) -> bool:
    """True for an object store URI: a path that no local file operation can reach."""
    return scheme_of(uri) in OBJECT_STORE_SCHEMES


def normalized(uri: str) -> str:
    """`uri` checked and made canonical: local paths absolute (against the working directory, as spark-submit
    resolves them), `file:` URIs as plain paths; a scheme this layer cannot serve is an UnsupportedPath."""
    scheme = scheme_of(uri)
    if scheme is None:
        return os.path.abspath(os.path.expanduser(uri))
    if scheme == "file":
        return os.path.abspath(re.sub(r"^file:(//)?", "", uri, flags=re.IGNORECASE))
    if scheme not in SUPPORTED_SCHEMES:
        raise UnsupportedPath(
            f"{uri!r}: the {scheme}: scheme is not served; use a local or mounted path, s3://, s3a://, "
            "gs://, abfss:// or dbfs:/"
        )
    if scheme in OBJECT_STORE_SCHEMES and ("://" not in uri or not uri.split("://", 1)[1].split("/", 1)[0]):
        raise UnsupportedPath(f"{uri!r} names no bucket")
    return uri.rstrip("/") if uri.count("/") > 2 else uri


def join(uri: str, *parts: str) -> str:
    """Path joining that keeps a URI's scheme and authority (os.path.join would do for local paths only)."""
    result = uri
    for part in parts:
        result = result.rstrip("/") + "/" + part.lstrip("/") if result else part
    return result


def relative(uri: str, base: str) -> str:
    """`uri`'s path below `base` ('a/b.txt'), for URIs and local paths alike."""
    if scheme_of(uri) is None:
        return os.path.relpath(uri, base)
    prefix = base.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri!r} is not under {base!r}")
    return uri[len(prefix) :]


def parent(uri: str) -> str:
    return posixpath.dirname(uri.rstrip("/")) if scheme_of(uri) else os.path.dirname(uri)


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def is_shared(uri: str) -> bool:
    """True for a path every host of a cluster sees the same: an object store, or Databricks' shared mounts."""
    return is_remote(uri) or scheme_of(uri) == "dbfs" or uri.startswith(("/Volumes/", "/dbfs/"))


def spark_path(uri: str) -> str:
    """`uri` as Spark's readers and writers must be given it to mean the same place as here. A local path gets an
    explicit file: scheme (Spark would resolve a bare path against its default filesystem, which on Databricks is
    DBFS); Unity Catalog volumes keep their /Volumes/ path (their FUSE mount to Python, governed paths to Spark)."""
    scheme = scheme_of(uri)
    if scheme is not None:
        return uri
    if uri.startswith("/Volumes/"):
        return uri
    if uri.startswith("/dbfs/"):
        return "dbfs:/" + uri[len("/dbfs/") :]
    return "file://" + os.path.abspath(uri)


@contextlib.contextmanager
def local_scratch() -> Iterator[str]:
    """A private local directory for a tool that reads or writes only local files (fastText, torch.save), removed
    afterwards; what must last is moved to storage with `upload`."""
    with tempfile.TemporaryDirectory(prefix="dataprep-") as directory:
        yield directory


def has_glob(uri: str) -> bool:
    return bool(_GLOB_CHARACTERS & set(uri))


def common_directory(uris: list[str]) -> str:
    """The deepest directory holding every one of `uris` (directories themselves)."""
    if all(scheme_of(uri) is None for uri in uris):
        return os.path.commonpath(uris)
    heads = {uri.split("://", 1)[0] + "://" + uri.split("://", 1)[1].split("/", 1)[0] for uri in uris if "://" in uri}
    if len(heads) != 1 or not all("://" in uri for uri in uris):
        raise UnsupportedPath(f"the paths {uris} are not in one store: give one source per store")
    (head,) = heads
    common = posixpath.commonpath(["/" + uri[len(head) :].lstrip("/") for uri in uris])
    return head + common.rstrip("/")


@dataclass(frozen=True)
class Storage:
    """How to reach the object stores: plain settings, so an instance pickles into Spark tasks unchanged.

    `s3_endpoint` is a host:port or URL of an S3-compatible server (None: AWS, or AWS_ENDPOINT_URL)."""

    s3_endpoint: str | None = None
    s3_scheme: str = "https"
    s3_region: str | None = None

    @classmethod
    def from_conf(cls, get: Callable[[str], str | None]) -> Storage:
        """The settings Spark's S3 connector was given (`spark.hadoop.fs.s3a.*`), so both reach the same store."""
        endpoint = get("spark.hadoop.fs.s3a.endpoint")
        ssl = (get("spark.hadoop.fs.s3a.connection.ssl.enabled") or "true").lower() != "false"
        scheme = "https" if ssl else "http"
        if endpoint and "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        return cls(endpoint or None, scheme, get("spark.hadoop.fs.s3a.endpoint.region"))

    @classmethod
    def from_spark(cls, spark) -> Storage:
        return cls.from_conf(lambda key: spark.conf.get(key, None))

    @classmethod
    def from_mapping(cls, conf: dict[str, str]) -> Storage:
        return cls.from_conf(conf.get)

    # -- resolving --------------------------------------------------------------------------------------------

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The filesystem holding `uri` and the path inside it."""
        scheme = scheme_of(uri)
        if scheme is None:
            return _local(), os.path.abspath(uri)
        rest = uri.split(":", 1)[1]
        if scheme == "file":
            return _local(), os.path.abspath(re.sub(r"^//", "", rest))
        if scheme == "dbfs":
            # On Databricks the DBFS root is mounted at /dbfs on the driver and every executor.
            return _local(), "/dbfs/" + rest.lstrip("/")
        authority_path = rest[2:] if rest.startswith("//") else rest
        if scheme in S3_SCHEMES:
            endpoint, endpoint_scheme = self.s3_endpoint, self.s3_scheme
            if endpoint is None:  # the AWS SDKs' own variables for an S3-compatible server
                endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint and "://" in endpoint:
                endpoint_scheme, endpoint = endpoint.split("://", 1)
            return _s3(endpoint, endpoint_scheme, self.s3_region), authority_path.rstrip("/")
        if scheme in ("gs", "gcs"):
            return _gcs(), authority_path.rstrip("/")
        if scheme in ("abfs", "abfss"):
            authority, _, path = authority_path.partition("/")
            container, _, host = authority.partition("@")
            return _azure(host.split(".", 1)[0]), f"{container}/{path}".rstrip("/")
        raise UnsupportedPath(f"{uri!r}: the {scheme}: scheme is not served")

    def _call(self, operation: str, uri: str, action: Callable[[pafs.FileSystem, str], object]):
        filesystem, path = self.resolve(uri)
        try:
            return action(filesystem, path)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise StorageError(f"{operation} {uri}: {error}") from error

    # -- asking -----------------------------------------------------------------------------------------------

    def size(self, uri: str) -> int | None:
        """The file's size, or None when there is no file there."""
        info = self._call("stat", uri, lambda fs, path: fs.get_file_info(path))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, uri: str) -> bool:
        info = self._call("stat", uri, lambda fs, path: fs.get_file_info(path))
        return info.type != pafs.FileType.NotFound

    def is_directory(self, uri: str) -> bool:
        info = self._call("stat", uri, lambda fs, path: fs.get_file_info(path))
        return info.type == pafs.FileType.Directory

    def entry(self, uri: str, root: str | None = None) -> Entry | None:
        """The file at `uri` as a listing would report it (see `walk` for `root`), or None when there is none."""
        if is_remote(uri):
            size = self.size(uri)
            return None if size is None else Entry(uri, size)
        path = self.resolve(uri)[1]
        if not os.path.lexists(path) or (os.path.isdir(path) and not os.path.islink(path)):
            return None
        return local_entry(path, root or os.path.dirname(path))

    def list_files(self, uri: str, recursive: bool = True) -> list[Entry]:
        """Files under a directory, sorted by URI; an object store answers with sizes, page by page."""
        selector = pafs.FileSelector(self.resolve(uri)[1], recursive=recursive, allow_not_found=True)
        infos = self._call("list", uri, lambda fs, _: fs.get_file_info(selector))
        root = self.resolve(uri)[1]
        return sorted(
            (Entry(join(uri, _below(info.path, root)), info.size) for info in infos if info.type == pafs.FileType.File),
            key=lambda entry: entry.uri,
        )

    def children(self, uri: str) -> list[str]:
        """Names of the files and directories directly under `uri` (none when it does not exist), sorted."""
        selector = pafs.FileSelector(self.resolve(uri)[1], recursive=False, allow_not_found=True)
        infos = self._call("list", uri, lambda fs, _: fs.get_file_info(selector))
        return sorted(posixpath.basename(info.path.rstrip("/")) for info in infos)

    def glob(self, pattern: str) -> list[Entry]:
        """Files matching a glob (`*` and `?` within a name, `**` across directories), sorted."""
        base = non_glob_prefix(pattern)
        matcher = re.compile(_glob_regex(pattern[len(base) :].lstrip("/")))
        if scheme_of(pattern) is None:
            return [e for e in self.walk(base, lambda name: True) if matcher.fullmatch(os.path.relpath(e.uri, base))]
        return [e for e in self.list_files(base) if matcher.fullmatch(relative(e.uri, base))]

    def walk(self, uri: str, keep_directory: Callable[[str], bool], root: str | None = None) -> list[Entry]:
        """Files under a directory, sorted, skipping directories `keep_directory(name)` refuses. On a local disk
        symlinks are reported, never followed out of `root`: a link to a directory, a broken link or one leaving
        `root` becomes an Entry with a problem; object stores have no links."""
        if scheme_of(uri) is not None and scheme_of(uri) not in ("file", "dbfs"):
            prefix = uri.rstrip("/") + "/"
            return [
                entry
                for entry in self.list_files(uri)
                if all(keep_directory(name) for name in entry.uri[len(prefix) :].split("/")[:-1])
            ]
        return list(_walk_local(self.resolve(uri)[1], keep_directory, os.path.realpath(root or uri)))

    # -- reading ----------------------------------------------------------------------------------------------

    def open_read(self, uri: str) -> io.BufferedReader:
        """A seekable binary reader (remote reads are buffered: every read of an object store is a request)."""
        raw = self._call("open", uri, lambda fs, path: fs.open_input_file(path))
        return io.BufferedReader(raw, buffer_size=READ_BUFFER if is_remote(uri) else io.DEFAULT_BUFFER_SIZE)

    def read_bytes(self, uri: str) -> bytes:
        return self._call("read", uri, lambda fs, path: _read_all(fs, path))

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def download(self, uri: str, local_path: str) -> None:
        """Copies a file to a local path, complete or not at all."""
        os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
        temporary = f"{local_path}.{os.getpid()}.partial"
        with self.open_read(uri) as source, open(temporary, "wb") as target:
            shutil.copyfileobj(source, target, _COPY_CHUNK)
        os.replace(temporary, local_path)

    def fetched(self, uri: str, scratch: str) -> str:
        """A local path holding the file at `uri`: the path itself when local, else a download into `scratch`."""
        if not is_remote(uri):
            return self.resolve(uri)[1]
        local_path = os.path.join(scratch, basename(uri))
        self.download(uri, local_path)
        return local_path

    def local_copy(self, uri: str) -> str:
        """A local path holding the file at `uri`: the path itself when it is local, else a copy in this machine's
        cache, downloaded once per machine and reused (executors load the quality model this way)."""
        if not is_remote(uri):
            return self.resolve(uri)[1]
        info = self._call("stat", uri, lambda fs, path: fs.get_file_info(path))
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(f"{uri}: no such file")
        # Named by the URI, size and modification time: a file replaced at the same URI is fetched anew.
        key = f"{uri}\n{info.size}\n{info.mtime_ns}"
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        local_path = os.path.join(tempfile.gettempdir(), "dataprep-cache", f"{digest}-{basename(uri)}")
        if not os.path.exists(local_path):
            self.download(uri, local_path)
        return local_path

    # -- writing ----------------------------------------------------------------------------------------------

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Writes a whole file: readers see the old file (or none) until the new one is complete."""
        self._call("write", uri, lambda fs, path: _write_whole(fs, path, io.BytesIO(data)))

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def upload(self, local_path: str, uri: str) -> None:
        """Copies a local file to `uri`, complete or not at all."""
        with open(local_path, "rb") as source:
            self._call("upload", uri, lambda fs, path: _write_whole(fs, path, source))

    def delete(self, uri: str) -> None:
        """Removes a file; a missing file is not an error (deletes are retried after crashes)."""
        try:
            self._call("delete", uri, lambda fs, path: fs.delete_file(path))
        except FileNotFoundError:
            pass

    def delete_tree(self, uri: str) -> None:
        """Removes a directory and everything under it; a missing directory is not an error."""
        if not self.is_directory(uri):
            return
        if is_remote(uri):
            # Batched deletes of the keys under the prefix; an object store has no directory to remove after them.
            self._call("delete", uri, lambda fs, path: fs.delete_dir_contents(path, missing_dir_ok=True))
        else:
            self._call("delete", uri, lambda fs, path: fs.delete_dir(path))

    # -- checking ---------------------------------------------------------------------------------------------

    def check_reachable(self, where: str, uri: str) -> None:
        """Fails before anything runs when `uri`'s bucket does not exist or cannot be listed, saying which path,
        which operation and which key of the config named it."""
        if not is_remote(uri):
            return
        filesystem, path = self.resolve(uri)
        bucket = path.split("/", 1)[0]
        try:
            info = filesystem.get_file_info(bucket)
            if info.type == pafs.FileType.NotFound:
                raise UnsupportedPath(f"{where}: {uri!r}: bucket {bucket!r} does not exist")
            filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except OSError as error:
            raise UnsupportedPath(f"{where}: {uri!r}: listing failed ({error})") from error


def _below(path: str, root: str) -> str:
    return path[len(root) :].lstrip("/")


def non_glob_prefix(pattern: str) -> str:
    kept = []
    for part in pattern.split("/"):
        if _GLOB_CHARACTERS & set(part):
            break
        kept.append(part)
    return "/".join(kept) or "/"


def _glob_regex(pattern: str) -> str:
    """A glob as a regular expression over '/'-separated paths: `**` spans directories, `*`, `?` and `[...]` stay
    within one name."""
    out, parts = [], pattern.split("/")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
            continue
        out.append(_name_regex(part))
        if not last:
            out.append("/")
    return "".join(out)


def _name_regex(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        char = part[i]
        closing = part.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif closing > 0:
            body = part[i + 1 : closing]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = closing
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _walk_local(top: str, keep_directory: Callable[[str], bool], root: str) -> Iterator[Entry]:
    files: list[Entry] = []
    for directory, subdirectories, names in os.walk(top, followlinks=False):
        kept = []
        for name in sorted(subdirectories):
            full = os.path.join(directory, name)
            if not keep_directory(name):
                continue
            if os.path.islink(full):
                files.append(_local_entry(full, root))
            else:
                kept.append(name)
        subdirectories[:] = kept
        files.extend(_local_entry(os.path.join(directory, name), root) for name in names)
    return iter(sorted(files, key=lambda entry: entry.uri))


def local_entry(path: str, root: str) -> Entry:
    """One local file: its size, or why it cannot be read as a file under `root` (links are never followed out)."""
    return _local_entry(path, os.path.realpath(root))


def _local_entry(path: str, root: str) -> Entry:
    if os.path.islink(path):
        target = os.path.realpath(path)
        if not os.path.exists(target):
            return Entry(path, 0, ("broken_symlink", f"points to {os.readlink(path)!r}"))
        if os.path.isdir(target):
            return Entry(path, 0, ("symlink_directory_not_followed", f"points to {os.readlink(path)!r}"))
        if os.path.commonpath([root, target]) != root:
            return Entry(path, 0, ("symlink_outside_root", f"points to {target!r}, outside {root!r}"))
    try:
        return Entry(path, os.stat(path).st_size)
    except OSError as error:
        return Entry(path, 0, ("unreadable_file", str(error)))


def _read_all(filesystem: pafs.FileSystem, path: str) -> bytes:
    # compression=None: pyarrow would otherwise (de)compress by file extension, and a .gz or .zst file must stay the
    # bytes it is (ingest decompresses it itself, with its bomb guard; an MDS shard's hashes cover its stored bytes).
    with filesystem.open_input_stream(path, compression=None) as stream:
        return stream.read()


def _write_whole(filesystem: pafs.FileSystem, path: str, source: io.IOBase) -> None:
    if isinstance(filesystem, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{os.getpid()}.partial"
        with open(temporary, "wb") as target:
            shutil.copyfileobj(source, target, _COPY_CHUNK)
        os.replace(temporary, path)
        return
    # One PUT (or a multipart upload completed at close): the object appears whole or not at all.
    with filesystem.open_output_stream(path, compression=None, metadata={}) as target:
        while chunk := source.read(_COPY_CHUNK):
            target.write(chunk)


@functools.cache
def _local() -> pafs.LocalFileSystem:
    return pafs.LocalFileSystem()


@functools.cache
def _s3(endpoint: str | None, scheme: str, region: str | None) -> pafs.S3FileSystem:
    options: dict = {"scheme": scheme}
    if endpoint:
        options["endpoint_override"] = endpoint
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


@functools.cache
def _gcs() -> pafs.FileSystem:
    return pafs.GcsFileSystem()


@functools.cache
def _azure(account: str) -> pafs.FileSystem:
    return pafs.AzureFileSystem(account_name=account)


# Reading needs no settings beyond the environment's (AWS_ENDPOINT_URL, credentials): what a notebook or the trainer
# has. Stages and writers are always handed the session's Storage (Storage.from_spark).
DEFAULT_STORAGE = Storage()
