"""Where the platform keeps its files: the local ``STROKE_HOME`` or an object store (S3 API).

:class:`Storage` is one implementation on one fsspec filesystem (``LocalFileSystem`` for a local
root, ``S3FileSystem`` for ``s3://bucket/prefix``): join paths, list with size and version, read,
write, publish atomically, delete, and a local copy when a library needs a real file. It also
hands out a pyarrow filesystem (for Parquet and CSV) and registers its filesystem on DuckDB
connections.

* **Local** (the default: no ``storage.url``): the root is ``STROKE_HOME`` and paths are plain
  :class:`~pathlib.Path` objects, so the layout and behaviour are exactly those of a single
  machine: a publication writes a temporary file beside its target, fsyncs it and renames it.
* **Object storage** (``storage.url = s3://bucket/prefix``; ``storage.endpoint_url`` for an
  S3-compatible store such as MinIO): paths are :class:`RemotePath` objects whose ``str()`` is the
  URL (``s3://bucket/prefix/...``). A publication is one ``PUT``, which S3 makes visible whole or
  not at all; a listing gives each object's ETag, so a replaced file is a new version.
  Credentials come from botocore's usual sources (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``AWS_PROFILE``, instance roles): this module reads no environment variable.

Every operation goes through the fsspec filesystem, except where a disk and an object store
genuinely differ; those few places are the "local disk or object store" section at the end of
:class:`Storage` (path types, versions, directories, atomic publication, exclusive creation,
locks) and the handles given to other libraries (pyarrow, DuckDB, delta-rs).

A :class:`RemotePath` refuses ``os.fspath``: handing one to ``open()``, pandas or pyarrow without
this module's filesystem fails loudly instead of writing a stray local file.

Private scratch files (a step's staged Parquet, a downloaded copy) go to :attr:`Storage.scratch`,
a local directory that is never shared: ``STROKE_HOME/tmp`` by default on a local root,
``<system temp>/stroke-scratch-<uid>`` with object storage, or ``storage.scratch_dir`` when set.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import fsspec
    import pyarrow.fs as pafs

    from stroke_dagster.core.settings import Settings

log = logging.getLogger(__name__)
REMOTE_PROTOCOLS = ("s3", "s3a", "memory")
QUERY_LISTING_SECONDS = 2.0  # how long DuckDB's filesystem keeps a listing (see Storage.query_fs)
StoragePath = PurePath  # a Path on a local root, a RemotePath on object storage


class RemotePath(PurePosixPath):
    """A path inside an object store: ``bucket/key...`` with the protocol kept for ``str()``.

    Joins, ``name``, ``stem``, ``suffix`` and ``parent`` work as for any pure path; ``str()`` is
    the URL (``s3://bucket/key``). ``os.fspath`` raises: it is not a local file.
    """

    protocol = "s3"

    def __str__(self) -> str:
        return f"{self.protocol}://{super().__str__()}"

    def __fspath__(self) -> str:
        raise TypeError(f"{self} is in object storage: read it through stroke_dagster.core.storage")

    @property
    def key(self) -> str:
        """``bucket/key`` as the fsspec filesystem names it (no protocol)."""
        return PurePosixPath.__str__(self)


class S3Path(RemotePath):
    protocol = "s3"


class MemoryPath(RemotePath):
    """A path in fsspec's in-process ``memory://`` filesystem (for experiments)."""

    protocol = "memory"


_PATH_CLASSES: dict[str, type[RemotePath]] = {"s3": S3Path, "memory": MemoryPath}


@dataclass(frozen=True)
class FileInfo:
    """One listed file: its path, size, modification time and a version that changes with it."""

    path: StoragePath
    size: int
    mtime_ns: int
    etag: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def version(self) -> str:
        """A short hash that changes when the file is replaced: of the ETag on object storage
        (content), of modification time and size on a local disk."""
        text = f"etag:{self.etag}" if self.etag else f"{self.mtime_ns}:{self.size}"
        digest = hashlib.sha1(text.encode(), usedforsecurity=False)
        return digest.hexdigest()[:16]


def _mtime_ns(info: dict[str, Any]) -> int:
    value = info.get("LastModified", info.get("mtime", info.get("last_modified")))
    if value is None:
        return 0
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1_000_000_000)
    return int(float(value) * 1_000_000_000)


def _basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=16)
def _filesystem(
    protocol: str,
    endpoint_url: str | None,
    region: str | None,
    pid: int,
    listings_seconds: float | None = None,
) -> fsspec.AbstractFileSystem:
    """One filesystem per configuration and process (s3fs's event loop does not survive a fork:
    a forked step process builds its own). ``listings_seconds``: keep listings that long (the
    query filesystem); ``None``: never (a listing shows what was published a moment ago). The
    local filesystem keeps no listings: it is the same for both."""
    import fsspec

    if protocol == "file":
        return fsspec.filesystem("file")
    options: dict[str, Any] = {"skip_instance_cache": True}
    if protocol in ("s3", "s3a"):
        if listings_seconds:
            options["use_listings_cache"] = True
            options["listings_expiry_time"] = listings_seconds
        else:
            options["use_listings_cache"] = False
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
        if region:
            options["client_kwargs"] = {"region_name": region}
    return fsspec.filesystem(protocol, **options)


class Storage:
    """The platform's files under one root (see the module docstring).

    Build it with :meth:`from_settings` (the ``storage`` section of the platform settings),
    :meth:`local`, or from a URL (``Storage("s3://bucket/prefix", endpoint_url=...)``). Methods
    take :data:`StoragePath` values made by :meth:`path` (``str`` is accepted too: a local path
    or a ``s3://`` URL).
    """

    def __init__(
        self,
        url: str | Path,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        scratch_dir: Path | None = None,
        fsync: bool = True,
    ) -> None:
        text = str(url)
        protocol, sep, rest = text.partition("://")
        self.fsync = fsync
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        if sep and protocol in REMOTE_PROTOCOLS:
            rest = rest.strip("/")
            if not rest:
                raise ValueError(f"storage URL needs a bucket: {text!r}")
            self.protocol = "s3" if protocol == "s3a" else protocol
            self.root: StoragePath = self._remote(rest)
            self._scratch = Path(scratch_dir) if scratch_dir else None
        else:
            if sep and protocol != "file":
                raise ValueError(f"unsupported storage URL {text!r} (use s3://bucket/prefix)")
            local = Path(rest if sep else text).expanduser().resolve()
            self.protocol = "file"
            self.root = local
            self._scratch = Path(scratch_dir) if scratch_dir else local / "tmp"

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def local(cls, home: Path, *, fsync: bool = True) -> Storage:
        """Storage on a local directory (today's single-machine layout)."""
        return cls(Path(home), fsync=fsync)

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        """The storage of ``settings``: ``storage.url`` or, when unset, ``settings.home``."""
        section = settings.storage
        return cls(
            section.url or settings.home,
            endpoint_url=section.endpoint_url,
            region=section.region,
            scratch_dir=section.scratch_dir,
            fsync=settings.warehouse.fsync,
        )

    def _remote(self, key: str) -> RemotePath:
        return _PATH_CLASSES[self.protocol](key)

    # -- identity ----------------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def url(self) -> str:
        """The root as a URL (a plain absolute path on a local root)."""
        return str(self.root)

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"Storage({self.url!r}{endpoint})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Storage) and (self.url, self.endpoint_url) == (
            other.url,
            other.endpoint_url,
        )

    def __hash__(self) -> int:
        return hash((self.url, self.endpoint_url))

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (``LocalFileSystem`` or ``S3FileSystem``)."""
        return _filesystem(self.protocol, self.endpoint_url, self.region, os.getpid())

    @property
    def query_fs(self) -> fsspec.AbstractFileSystem:
        """The filesystem registered on DuckDB connections: the same store, with listings kept
        for :data:`QUERY_LISTING_SECONDS`. DuckDB asks for a file's size and time several times
        per query (a ``HEAD`` each without a cache); with it, one listing per directory answers
        them all. :meth:`register` (each new connection) and the writes of this process clear
        it, so a new connection sees every published file; a connection kept open sees another
        machine's new file at most that many seconds late. On a local root it is :attr:`fs`."""
        return _filesystem(
            self.protocol, self.endpoint_url, self.region, os.getpid(), QUERY_LISTING_SECONDS
        )

    def _changed(self) -> None:
        """Forget the query filesystem's listings after a write of this process (a no-op on the
        local filesystem, which keeps none)."""
        self.query_fs.invalidate_cache()

    @property
    def scratch(self) -> Path:
        """A local directory for private temporary files (created on demand)."""
        base = self._scratch or Path(tempfile.gettempdir()) / f"stroke-scratch-{os.getuid()}"
        base.mkdir(parents=True, exist_ok=True)
        return base

    # -- paths -------------------------------------------------------------------------------

    def path(self, *parts: str) -> StoragePath:
        """``root / parts...``."""
        return self.root.joinpath(*parts)

    def as_path(self, value: str | PurePath) -> StoragePath:
        """A path of this storage from its string form (a URL on object storage)."""
        if isinstance(value, PurePath):
            return value
        protocol, sep, rest = value.partition("://")
        if sep and protocol != "file":
            return self._remote(rest)
        return Path(rest if sep else value)

    def key(self, path: str | PurePath) -> str:
        """The name the fsspec filesystem uses for ``path``."""
        path = self.as_path(path)
        return path.key if isinstance(path, RemotePath) else str(path)

    def uri(self, path: str | PurePath) -> str:
        """The name DuckDB, pandas and error messages use (a URL, or a local path)."""
        return str(self.as_path(path))

    # -- inspecting --------------------------------------------------------------------------

    def exists(self, path: str | PurePath) -> bool:
        """Whether ``path`` exists (a file, a directory or a prefix). An unreachable store
        raises (it is not "no such file"): s3fs's own ``exists``/``isfile`` answer ``False`` on
        any error, which would turn an outage into a missing cohort file, a permanent failure
        instead of a retried one."""
        try:
            self.fs.info(self.key(path))
        except (FileNotFoundError, NotADirectoryError):  # the latter: a file's "child" (local)
            return False
        return True

    def is_file(self, path: str | PurePath) -> bool:
        """Whether ``path`` is a file; raises when the store cannot be reached (see
        :meth:`exists`)."""
        return self.info(path) is not None

    def info(self, path: str | PurePath) -> FileInfo | None:
        """Size, modification time and version of one file; ``None`` when it is not a file."""
        path = self.as_path(path)
        try:
            raw = self.fs.info(self.key(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self._file_info(raw, path)

    def _listing(self, directory: StoragePath) -> list[dict[str, Any]]:
        """The entries directly in ``directory``; none when it is missing or is a file (fsspec
        then lists the file itself)."""
        key = self.key(directory)
        try:
            entries = self.fs.ls(key, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        itself = self.fs._strip_protocol(key).rstrip("/")
        return [raw for raw in entries if raw["name"].rstrip("/") != itself]

    def list_files(self, directory: str | PurePath, pattern: str = "*") -> list[FileInfo]:
        """The files directly in ``directory`` whose name matches ``pattern``, sorted by name.

        Hidden names (``.*``: temporary files) are left out. A missing directory lists nothing.
        """
        directory = self.as_path(directory)
        found: list[FileInfo] = []
        for raw in self._listing(directory):
            name = _basename(raw["name"])
            if name.startswith(".") or not fnmatch.fnmatchcase(name, pattern):
                continue
            info = self._file_info(raw, directory / name)
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda item: item.path.name)

    def list_dirs(self, directory: str | PurePath, pattern: str = "*") -> list[StoragePath]:
        """The sub-directories (prefixes) directly in ``directory`` matching ``pattern``, sorted."""
        directory = self.as_path(directory)
        found: list[StoragePath] = []
        for raw in self._listing(directory):
            name = _basename(raw["name"])
            if fnmatch.fnmatchcase(name, pattern) and self._is_dir(raw):
                found.append(directory / name)
        return sorted(found, key=lambda p: p.name)

    def glob(self, pattern: str | PurePath) -> list[StoragePath]:
        """Files (and directories) matching a glob pattern (``*`` within one level), sorted."""
        return sorted(self._to_path(name) for name in self.fs.glob(self.key(pattern)))

    # -- reading -----------------------------------------------------------------------------

    def open(self, path: str | PurePath, mode: str = "rb") -> IO[Any]:
        """Open a file for reading (or for a non-atomic write; prefer :meth:`write_bytes`)."""
        return self.fs.open(self.key(path), mode)

    def read_bytes(self, path: str | PurePath) -> bytes:
        return self.fs.cat_file(self.key(path))

    def read_text(self, path: str | PurePath, encoding: str = "utf-8") -> str:
        return self.read_bytes(path).decode(encoding)

    def read_parquet(self, path: str | PurePath, **kwargs: Any) -> Any:
        """A Parquet file as an Arrow table (``pyarrow.parquet.read_table`` arguments)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.key(path), filesystem=self.arrow_filesystem(), **kwargs)

    # -- writing -----------------------------------------------------------------------------

    def write_bytes(self, path: str | PurePath, data: bytes) -> None:
        """Replace ``path`` by ``data`` atomically: staged in a private file, then published
        (see :meth:`publish`)."""
        path = self.as_path(path)
        with self.staged_file(suffix=".tmp", near=path.parent) as tmp:
            tmp.write_bytes(data)
            self.publish(tmp, path)

    def write_text(self, path: str | PurePath, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(path, text.encode(encoding))

    def delete(self, path: str | PurePath) -> bool:
        """Delete one file; ``False`` if it was already gone."""
        path = self.as_path(path)
        if not self.exists(path):  # S3 answers a DELETE of nothing with success: ask first
            return False
        try:
            self.fs.rm_file(self.key(path))
        except FileNotFoundError:  # deleted meanwhile
            return False
        self._changed()
        return True

    def delete_tree(self, directory: str | PurePath) -> None:
        """Delete a directory (every object under a prefix) and what it holds; nothing when it
        does not exist."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self.fs.rm(self.key(directory), recursive=True)
        self._changed()

    # -- other libraries ---------------------------------------------------------------------

    def arrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem for :meth:`key` names (``pq.read_table(key, filesystem=...)``).

        Locally pyarrow's own (native) filesystem, which reads without a round trip through
        Python per block; on object storage this storage's fsspec filesystem.
        """
        import pyarrow.fs as pafs

        if self.is_local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    @property
    def delta_options(self) -> dict[str, str]:
        """``storage_options`` for delta-rs (the warehouse's Delta tables) on this storage.

        Credentials come from the usual ``AWS_*`` environment. delta-rs commits a table version
        with a conditional ``PUT`` (``If-None-Match``), which AWS S3 and compatible stores honour,
        so concurrent writers need no locking service. A local root needs no options.
        """
        if self.is_local:
            return {}
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        options = {"AWS_REGION": region or "us-east-1"}
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        return options

    def register(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """Let DuckDB read this storage's URLs on ``con`` (no-op on a local root: DuckDB reads
        local files itself, faster than through a Python filesystem)."""
        if not self.is_local:
            fs = self.query_fs
            fs.invalidate_cache()  # a new connection starts from fresh listings
            con.register_filesystem(fs)
        return con

    # -- where a local disk and an object store differ ---------------------------------------
    # Everything above goes through the fsspec filesystem alone. The methods below keep the
    # few behaviours that LocalFileSystem and S3FileSystem do not share, each with its reason.

    def _to_path(self, name: str) -> StoragePath:
        """A path from the filesystem's name for it. Locally a ``pathlib.Path``: callers open,
        stat and hand these to libraries as files. On object storage a :class:`RemotePath`,
        which refuses to be taken for a local file."""
        if self.is_local:
            return Path(name)
        return self._remote(name.rstrip("/"))

    def _file_info(self, raw: dict[str, Any], path: StoragePath) -> FileInfo | None:
        """``raw`` (an fsspec info or listing entry for ``path``) as a :class:`FileInfo`;
        ``None`` unless it is a file.

        Versions differ by nature: an object store gives each object an ETag (of its content);
        a disk has none, and a local version is of ``st_mtime_ns`` and size. fsspec's local
        entries keep only the float ``st_mtime`` (not exact to the nanosecond) and do not follow
        a symbolic link in a listing, so the local file is ``stat``-ed here. Versions are kept
        (sensor cursors, cohort summaries): they must not change from one release to the next.
        """
        if self.is_local:
            try:
                status = os.stat(raw["name"])
            except (FileNotFoundError, NotADirectoryError):  # removed meanwhile, a broken link
                return None
            if not stat.S_ISREG(status.st_mode):
                return None
            return FileInfo(path, status.st_size, status.st_mtime_ns)
        if raw.get("type") != "file":
            return None
        etag = raw.get("ETag") or raw.get("etag")
        return FileInfo(
            path,
            int(raw.get("size") or 0),
            _mtime_ns(raw),
            etag.strip('"') if isinstance(etag, str) else None,
        )

    @staticmethod
    def _is_dir(raw: dict[str, Any]) -> bool:
        """Whether a listing entry is a directory (a prefix). fsspec's local listing reports a
        symbolic link to a directory as ``"other"`` (with ``islink``, a key only local entries
        have); like ``pathlib``, the platform follows it."""
        if raw.get("type") == "directory":
            return True
        return bool(raw.get("islink")) and os.path.isdir(raw["name"])

    def makedirs(self, directory: str | PurePath) -> None:
        """Create a local directory. Object stores have no directories: nothing to do (s3fs's
        ``makedirs`` would probe for, and even create, the bucket)."""
        if self.is_local:
            self.fs.makedirs(self.key(directory), exist_ok=True)

    @contextlib.contextmanager
    def staged_file(self, suffix: str = "", near: str | PurePath | None = None) -> Iterator[Path]:
        """A fresh local temporary file name, removed afterwards if still there.

        ``near``: on a local root, put it in that directory, so that :meth:`publish` renames it
        without a copy (a rename does not cross filesystems); on object storage it always goes
        to :attr:`scratch` (it is uploaded from wherever it is).
        """
        if self.is_local and near is not None:
            directory = Path(self.as_path(near))
            directory.mkdir(parents=True, exist_ok=True)
        else:
            directory = self.scratch
        tmp = directory / f".stage-{uuid.uuid4().hex[:12]}.{os.getpid()}{suffix}"
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def local_copy(self, path: str | PurePath) -> Iterator[Path]:
        """A local file with the content of ``path`` for as long as the block runs.

        On a local root it is the file itself (no copy); on object storage a download into
        :attr:`scratch`, deleted afterwards. Raises ``FileNotFoundError`` when it is missing.
        """
        path = self.as_path(path)
        if self.is_local:
            if self.info(path) is None:
                raise FileNotFoundError(str(path))
            yield Path(path)
            return
        directory = Path(tempfile.mkdtemp(prefix="download-", dir=self.scratch))
        try:
            local = directory / path.name
            try:
                self.fs.get_file(self.key(path), str(local))
            except FileNotFoundError:
                raise FileNotFoundError(str(path)) from None
            yield local
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def publish(
        self,
        local_file: str | Path,
        path: str | PurePath,
        *,
        move: bool = True,
        fsync: bool | None = None,
        exclusive: bool = False,
    ) -> bool:
        """Make ``local_file`` the content of ``path`` in one step: readers see the old file or
        the new one, never a part.

        Local: copy (or move) beside the target, fsync, rename over it. Object storage: one
        upload (a ``PUT``; S3 shows an object only once it is complete). With ``move`` the local
        file is gone afterwards. ``fsync`` (default: the storage's setting) applies locally.
        ``exclusive`` (object storage only): a conditional ``PUT`` that returns ``False``, and
        publishes nothing, when ``path`` exists.
        """
        fsync = self.fsync if fsync is None else fsync
        local_file = Path(local_file)
        path = self.as_path(path)
        if self.is_local:
            # fsspec's local put_file/mv copy into the target itself (shutil), which a reader
            # can see half-written, and never fsync: a rename over the target is atomic.
            if exclusive:
                raise ValueError("exclusive publish is for object storage (locally: os.link)")
            _rename_into_place(local_file, Path(path), move=move, fsync=fsync)
            return True
        try:
            self.fs.put_file(
                str(local_file), self.key(path), mode="create" if exclusive else "overwrite"
            )
        except FileExistsError:  # s3fs's translation of 412 PreconditionFailed
            return False
        self._changed()
        if move:
            local_file.unlink(missing_ok=True)
        return True

    def create_exclusive(self, path: str | PurePath, data: bytes) -> bool:
        """Create ``path`` with ``data`` only if it does not exist; ``False`` if it does.

        Local: ``open(..., "xb")`` (``O_CREAT | O_EXCL``). Object storage: a conditional ``PUT``
        (``If-None-Match: *``), which S3, MinIO and moto refuse with 412 when the key exists.
        (fsspec's local ``pipe_file(mode="create")`` checks, then writes: not exclusive; s3fs's
        ``open(..., "xb")`` of empty data is an unconditional ``PUT``.)
        """
        path = self.as_path(path)
        self.makedirs(path.parent)
        try:
            if self.is_local:
                with self.fs.open(self.key(path), "xb") as handle:
                    handle.write(data)
            else:
                self.fs.pipe_file(self.key(path), data, mode="create")
        except FileExistsError:  # locally EEXIST; s3fs's translation of 412 PreconditionFailed
            return False
        self._changed()
        return True

    @contextlib.contextmanager
    def lock(
        self, path: str | PurePath, *, timeout: float = 600.0, lease: float = 900.0
    ) -> Iterator[None]:
        """Hold an exclusive lock named ``path`` across processes and machines of this storage.

        Local: ``flock`` on the file (released by the kernel if the holder dies). Object
        storage: a lease object created by a conditional ``PUT``; a lease older than ``lease``
        seconds (its holder died) is broken. Raises :class:`TimeoutError` after ``timeout``.
        """
        path = self.as_path(path)
        deadline = time.monotonic() + timeout
        if self.is_local:
            # A kernel lock: nothing is left behind when its holder dies. An object store has
            # no such thing, hence the lease below.
            with self._flock(Path(path), deadline, timeout):
                yield
            return
        holder = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}
        ).encode()
        while not self.create_exclusive(path, holder):
            info = self.info(path)
            if info is not None and time.time() - info.mtime_ns / 1e9 > lease:
                log.warning("breaking the stale lock %s (older than %g s)", path, lease)
                self.delete(path)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {path} held for over {timeout:g} s")
            time.sleep(0.5)
        try:
            yield
        finally:
            self.delete(path)

    @contextlib.contextmanager
    def _flock(self, target: Path, deadline: float, timeout: float) -> Iterator[None]:
        """``flock`` on ``target`` (see :meth:`lock`), polling until ``deadline``."""
        import fcntl

        self.makedirs(target.parent)
        with open(target, "a+b") as handle:
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"lock {target} held for over {timeout:g} s") from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _rename_into_place(local_file: Path, target: Path, *, move: bool, fsync: bool) -> None:
    """Put ``local_file`` at ``target`` on a local disk atomically: into a hidden file beside
    the target (a rename, or a copy from another filesystem), fsynced, then renamed over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if move:
            try:
                os.rename(local_file, tmp)
            except OSError:  # another filesystem
                shutil.copyfile(local_file, tmp)
                local_file.unlink(missing_ok=True)
        else:
            shutil.copyfile(local_file, tmp)
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
        if fsync:
            fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=1)
def local_files() -> Storage:
    """A local storage for functions given plain local paths (its root is ``/``)."""
    return Storage(Path("/"), scratch_dir=Path(tempfile.gettempdir()))


def storage_for(path: str | PurePath, storage: Storage | None) -> Storage:
    """``storage``, or :func:`local_files` for a local path; a remote path needs its storage."""
    if storage is not None:
        return storage
    if isinstance(path, RemotePath) or "://" in str(path):
        raise ValueError(f"{path} is in object storage: pass its Storage")
    return local_files()


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename inside it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
