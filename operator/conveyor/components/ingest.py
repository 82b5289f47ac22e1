"""The `ingest` component: bring a dataset into the pipeline as a Parquet file.

Sources (`source`, or `sql`, or the optional input `data`; exactly one):

- `sklearn://<name>`: the datasets scikit-learn ships (breast_cancer, iris, wine, diabetes,
  digits; the target column is `target`);
- `file://<path>`: a local CSV, Parquet or JSON-lines file;
- `s3://<bucket>/<key>`: an object in S3-compatible storage. The endpoint is `s3_endpoint`, else
  the environment variable `CONVEYOR_S3_ENDPOINT`, else boto3's default (AWS); credentials come
  from the standard AWS environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...);
- `https://...`: streamed to a temporary file, refused once it exceeds `max_bytes`. Plain
  `http://` is accepted only for loopback hosts (127.0.0.0/8, ::1, localhost), which is what
  local test servers use; a redirect is held to the same rule;
- `sql`: a query or a whole table read through SQLAlchemy (`url` is an SQLAlchemy URL such as
  `postgresql+psycopg://reader@db:5432/sales`; the password comes from the environment variable
  named by `password_env`, never from the URL, because the configuration is recorded in the
  Run's status and cache key). Add an `ORDER BY` to the query: without it the row order, and so
  the snapshot's digest, may change between reads of unchanged data;
- the input `data`: a file the step runtime already fetched (and digested).

File formats: `format`, else the suffix, else a sniff of the first bytes.

Besides the `dataset` snapshot (deterministic Parquet: same rows, same bytes, same digest), the
component writes `report`: the source (without credentials), the sha256 and size of the bytes it
read when the source is a file, the row count, and the inferred schema (pandas dtype and Parquet
type per column, with missing counts). The step runtime records the snapshot's digest.

Caching: a `sklearn://` ingest is cached by its configuration; a `file://` one by its configuration and
the sha256 of the file's content, which the local runner reads before planning, so a changed file is a
new key and an unchanged one a hit (the operator cannot read a pod's files: there a `file://` ingest
always runs). An ingest from S3, HTTPS or SQL is never served from the cache, since nothing pins down
the content behind the URI or query; to cache one, pass the object as the input `data`, whose digest is
in the key.

This module is the contract, cheap to import; the work (pandas, pyarrow, scikit-learn, SQLAlchemy,
boto3 through `conveyor.storage.s3`) is in `_ingest`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from conveyor.components.base import Component, ComponentConfig, Metrics

FileFormat = Literal["auto", "csv", "parquet", "jsonl"]
SCHEMES = ("sklearn", "file", "s3", "https", "http")
DEFAULT_MAX_BYTES = 10 * 1024**3


class SqlSource(ComponentConfig):
    """A query or a table read through SQLAlchemy (`pandas.read_sql`)."""

    url: str = Field(min_length=1)
    """SQLAlchemy URL without a password, e.g. `postgresql+psycopg://reader@db:5432/sales`."""
    query: str | None = None
    """A SELECT statement; include ORDER BY for a reproducible snapshot."""
    table: str | None = None
    """A table (`name` or `schema.name`), read whole; exclusive with `query`."""
    password_env: str | None = None
    """Name of the environment variable holding the database password."""

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, url: str) -> str:
        if "://" not in url:
            raise ValueError("not an SQLAlchemy URL (dialect[+driver]://user@host/database)")
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            raise ValueError("the URL holds a password: put it in an environment variable named by password_env")
        return url

    @model_validator(mode="after")
    def _query_or_table(self) -> Self:
        if (self.query is None) == (self.table is None):
            raise ValueError("set exactly one of 'query' or 'table'")
        return self


class IngestConfig(ComponentConfig):
    """Where the data comes from."""

    source: str | None = None
    """`sklearn://<name>`, `file://<path>`, `s3://<bucket>/<key>` or `https://...`.

    Omit it when reading with `sql` or from the input `data`."""
    format: FileFormat = "auto"
    """File format; `auto` decides from the file suffix, else from the first bytes."""
    sql: SqlSource | None = None
    """Read from a database instead of a file."""
    s3_endpoint: str | None = None
    """Endpoint URL for `s3://` sources; default: $CONVEYOR_S3_ENDPOINT, else AWS."""
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    """Refuse an `s3://` or `https://` source larger than this many bytes."""
    timeout_seconds: float = Field(default=60.0, gt=0)
    """Connect and read timeout of an `https://` download (per network operation, not in total)."""

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, source: str | None) -> str | None:
        if source is None:
            return None
        scheme, sep, _ = source.partition("://")
        if sep and scheme not in SCHEMES:
            raise ValueError(f"scheme {scheme + '://'!r} is not supported (supported: {', '.join(SCHEMES)})")
        if scheme in ("http", "https"):
            try:
                parts = urlsplit(source)
            except ValueError as exc:
                raise ValueError(f"not a valid URL: {exc}") from None
            if not parts.hostname:
                raise ValueError("the URL has no host")
            if parts.username or parts.password:
                raise ValueError("the URL holds credentials; they would be recorded in the Run")
        return source

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.source is not None and self.sql is not None:
            raise ValueError("set 'source' or 'sql', not both")
        return self


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Load the source and write it to the `dataset` output (and `report`)."""
    from conveyor.components import _ingest  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, IngestConfig)
    return _ingest.run(config, inputs, outputs)


COMPONENT = Component(
    name="ingest",
    config=IngestConfig,
    run=run,
    optional_inputs=frozenset({"data"}),
    outputs=frozenset({"dataset", "report"}),
    # The datasets scikit-learn ships are pinned by the configuration and a local file by its content digest
    # (content_uris); a URL, bucket or query is pinned by nothing.
    reads_outside_world=lambda config: (
        config.get("sql") is not None
        or not str(config.get("source") or "sklearn://").startswith(("sklearn://", "file://"))
    ),
    content_uris=lambda config: (
        (str(config["source"]),) if str(config.get("source") or "").startswith("file://") else ()
    ),
    description=(
        "Load a dataset (scikit-learn sample data, a local, S3 or HTTPS CSV/Parquet/JSON-lines file, or an SQL "
        "query) as Parquet, with a report of its rows and schema."
    ),
)
