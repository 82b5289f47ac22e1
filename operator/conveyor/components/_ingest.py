"""The work of the `ingest` component (the contract is `conveyor.components.ingest`): read a source, write Parquet."""

from __future__ import annotations

import ipaddress
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn import datasets as skdatasets

from conveyor.components.atomic import write_json
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import require_rows, write_dataset
from conveyor.components.ingest import FileFormat, IngestConfig, SqlSource
from conveyor.storage.digest import sha256_file

REPORT_FORMAT = "conveyor.ingest-report/v1"
S3_ENDPOINT_ENV = "CONVEYOR_S3_ENDPOINT"
_CHUNK = 1 << 20

SKLEARN_DATASETS: dict[str, Callable[..., Any]] = {
    "breast_cancer": skdatasets.load_breast_cancer,
    "iris": skdatasets.load_iris,
    "wine": skdatasets.load_wine,
    "diabetes": skdatasets.load_diabetes,
    "digits": skdatasets.load_digits,
}
_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass(frozen=True)
class Loaded:
    """A source read into memory, with what the report says about where it came from."""

    frame: pd.DataFrame
    source: dict[str, Any]


def _load_sklearn(name: str) -> pd.DataFrame:
    loader = SKLEARN_DATASETS.get(name)
    if loader is None:
        raise ComponentError(
            f"source: unknown scikit-learn dataset {name!r}; known: {', '.join(sorted(SKLEARN_DATASETS))}"
        )
    bunch = loader(as_frame=True)
    frame = bunch.frame
    # Columns named by position (digits: pixel_0_0 ...) are strings already; make sure of it for Parquet.
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _file_format(path: Path, configured: FileFormat) -> FileFormat:
    """The configured format, else the suffix's, else a sniff of the first bytes.

    Sniffing matters for files the runtime fetched: they are stored under the input's name,
    without a suffix.
    """
    if configured != "auto":
        return configured
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip().startswith(b"{"):
        return "jsonl"
    if b"\0" in head:
        raise ComponentError(f"format: {path.name!r} is binary but not Parquet; set format explicitly")
    return "csv"


def _read_file(path: Path, configured: FileFormat, name: str | None = None) -> pd.DataFrame:
    name = name or path.name
    if not path.is_file():
        raise ComponentError(f"source: no file at {str(path)!r}")
    fmt = _file_format(path, configured)
    try:
        if fmt == "csv":
            # Only an empty cell is missing: pandas' NA tokens (`n/a`, `NA`, `null`, `-nan`, ...) stay text, so a
            # numeric column holding them is reported by `validate` as such instead of silently losing rows.
            return pd.read_csv(path, keep_default_na=False, na_values=[""])
        if fmt == "parquet":
            return pq.read_table(path).to_pandas()
        return pd.read_json(path, lines=True)
    except pd.errors.EmptyDataError as exc:
        raise ComponentError(f"source: {name!r} is empty") from exc
    except (ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise ComponentError(f"source: {name!r} is not valid {fmt}: {exc}") from exc


def _load_file(path: Path, configured: FileFormat, uri: str, name: str | None = None) -> Loaded:
    """A file's frame, with the digest and size of the bytes it was read from."""
    frame = _read_file(path, configured, name)
    return Loaded(frame, {"uri": uri, "sha256": sha256_file(path), "bytes": path.stat().st_size})


@contextmanager
def _download_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="conveyor-ingest-") as directory:
        yield Path(directory)


def _remote_name(path: str) -> str:
    """A local file name keeping the remote suffix (it decides the format) and nothing else."""
    suffix = PurePosixPath(path).suffix.lower()
    return "source" + (suffix if suffix in _SUFFIXES else "")


def _load_s3(uri: str, config: IngestConfig) -> Loaded:
    from conveyor.storage.s3 import download_object  # noqa: PLC0415  # boto3 only where S3 is used
    from conveyor.storage.store import ArtifactMissing, StoreUnavailable  # noqa: PLC0415

    endpoint = config.s3_endpoint or os.environ.get(S3_ENDPOINT_ENV) or None
    key = uri.removeprefix("s3://").partition("/")[2]
    with _download_dir() as directory:
        local = directory / _remote_name(key)
        try:
            download_object(uri, local, endpoint=endpoint, max_bytes=config.max_bytes)
        except ArtifactMissing as exc:
            raise ComponentError(f"source: {exc}") from None
        except (StoreUnavailable, ValueError) as exc:
            raise ComponentError(f"source: could not download {uri}: {exc}") from None
        return _load_file(local, config.format, uri, PurePosixPath(key).name)


def _check_http_url(url: str) -> None:
    """https anywhere; http only to a loopback host (a local test server), never across a network."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    if parts.scheme == "http":
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        raise ComponentError(f"source: plain http:// is allowed only for loopback hosts, not {host!r}; use https://")
    raise ComponentError(f"source: {parts.scheme + '://'!r} is not allowed for a download")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs the source itself could have named (no https → remote http)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        _check_http_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _redacted(url: str) -> str:
    """The URL without its query and fragment (signed URLs carry tokens there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _download_http(url: str, dest: Path, max_bytes: int, timeout: float) -> None:
    """Stream `url` into `dest`, stopping as soon as the body exceeds `max_bytes`."""
    shown = _redacted(url)
    opener = urllib.request.build_opener(_CheckedRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "conveyor-ingest"})  # noqa: S310  # scheme checked
    try:
        with opener.open(request, timeout=timeout) as response, dest.open("wb") as out:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ComponentError(f"source: {shown} is {declared} bytes, over max_bytes={max_bytes}")
            received = 0
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise ComponentError(f"source: {shown} is larger than max_bytes={max_bytes}")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response (and its socket) open
        raise ComponentError(f"source: {shown} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ComponentError(f"source: could not download {shown}: {reason}") from None


def _load_http(url: str, config: IngestConfig) -> Loaded:
    _check_http_url(url)
    path = urlsplit(url).path
    with _download_dir() as directory:
        local = directory / _remote_name(path)
        _download_http(url, local, config.max_bytes, config.timeout_seconds)
        return _load_file(local, config.format, _redacted(url), PurePosixPath(path).name or "source")


def _database_reason(exc: BaseException) -> str:
    """The driver's own error class and first message line (pandas and SQLAlchemy wrap it, repeating the SQL)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    original = getattr(exc, "orig", None)
    cause = original if isinstance(original, BaseException) else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def _load_sql(sql: SqlSource) -> Loaded:
    import sqlalchemy  # noqa: PLC0415  # only SQL sources need it
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    try:
        url = sqlalchemy.make_url(sql.url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise ComponentError(f"sql.url: not an SQLAlchemy URL: {exc}") from None
    if sql.password_env is not None:
        password = os.environ.get(sql.password_env)
        if password is None:
            raise ComponentError(f"sql.password_env: the environment variable {sql.password_env!r} is not set")
        url = url.set(password=password)
    shown = url.render_as_string(hide_password=True)
    what: dict[str, Any] = {"uri": sql.url}
    engine = sqlalchemy.create_engine(url, pool_pre_ping=False)
    try:
        with engine.connect() as connection:
            if sql.table is not None:
                schema, _, table = sql.table.rpartition(".")
                frame = pd.read_sql_table(table, connection, schema=schema or None)
            else:
                frame = pd.read_sql_query(sqlalchemy.text(sql.query or ""), connection)
    except ValueError as exc:  # pandas: no such table
        raise ComponentError(f"sql.table: {exc}") from None
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
        raise ComponentError(f"sql: reading from {shown} failed: {_database_reason(exc)}") from None
    finally:
        engine.dispose()
    frame.columns = [str(c) for c in frame.columns]
    what.update({"table": sql.table} if sql.table is not None else {"query": sql.query})
    return Loaded(frame, what)


def _load_source(source: str, config: IngestConfig) -> Loaded:
    scheme, sep, rest = source.partition("://")
    if not sep:
        raise ComponentError(f"source: {source!r} is not a URI; use sklearn://<name> or file://<path>")
    if scheme == "sklearn":
        return Loaded(_load_sklearn(rest.strip("/")), {"uri": source})
    if scheme == "file":
        return _load_file(Path(url2pathname(rest)), config.format, source)
    if scheme == "s3":
        return _load_s3(source, config)
    if scheme in ("https", "http"):
        return _load_http(source, config)
    raise ComponentError(f"source: scheme {scheme + '://'!r} is not supported")


def inferred_schema(frame: pd.DataFrame, table: pa.Schema) -> list[dict[str, Any]]:
    """One entry per column: pandas dtype, the Parquet (Arrow) type written, and the missing count."""
    return [
        {
            "name": name,
            "dtype": str(frame[name].dtype),
            "arrow_type": str(table.field(name).type),
            "missing": int(frame[name].isna().sum()),
        }
        for name in frame.columns
    ]


def run(config: IngestConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Load the source and write it to the `dataset` output, and the report when `report` is asked for."""
    data = inputs.get("data")
    given = [x for x in (data, config.source, config.sql) if x is not None]
    if len(given) != 1:
        raise ComponentError("source: set exactly one of the config keys 'source' or 'sql', or the input 'data'")
    if data is not None:
        loaded = _load_file(data, config.format, "input:data")
    elif config.sql is not None:
        loaded = _load_sql(config.sql)
    else:
        loaded = _load_source(str(config.source), config)
    frame = loaded.frame
    require_rows(frame, "dataset")
    write_dataset(frame, outputs["dataset"])
    if "report" in outputs:
        written = pq.read_schema(outputs["dataset"])
        report = {
            "format": REPORT_FORMAT,
            "source": loaded.source,
            "rows": len(frame),
            "columns": frame.shape[1],
            "schema": inferred_schema(frame, written),
        }
        write_json(report, outputs["report"])
    return {"rows": float(len(frame)), "columns": float(frame.shape[1])}
