"""The ingest component reading real servers: MinIO over S3, a loopback HTTP server, PostgreSQL."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import pytest
import sqlalchemy

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset
from conveyor.components.registry import get_component
from conveyor.storage.digest import sha256_bytes
from testenv.minio import S3Endpoint
from testenv.postgres import PostgresEndpoint, PostgresServer

pytestmark = pytest.mark.integration

FRAME = pd.DataFrame(
    {
        "x": [1.5, 2.5, None, 4.0],
        "colour": ["red", "blue", "red", None],
        "n": [1, 2, 3, 4],
    }
)
CSV = FRAME.to_csv(index=False).encode()


def ingest(config: dict[str, Any], out: Path) -> tuple[Metrics, dict[str, Any]]:
    """Run the component as the step runtime does; return its metrics and report."""
    component = get_component("ingest")
    report = out.with_suffix(".report.json")
    metrics = component.run(component.config.model_validate(config), {}, {"dataset": out, "report": report})
    return metrics, json.loads(report.read_text())


def assert_is_frame(path: Path) -> None:
    frame = read_dataset(path)
    assert list(frame.columns) == ["x", "colour", "n"]
    assert frame["n"].tolist() == [1, 2, 3, 4]
    assert frame["colour"].tolist()[:3] == ["red", "blue", "red"]
    assert frame["x"].isna().tolist() == [False, False, True, False]


# ---------------------------------------------------------------- S3 (MinIO)


@pytest.fixture
def s3_credentials(minio: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """The standard AWS variables, as a step pod gets them from its Secret."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", minio.region)
    monkeypatch.delenv("CONVEYOR_S3_ENDPOINT", raising=False)
    return minio


def put(minio: S3Endpoint, key: str, body: bytes) -> None:
    s3 = minio.client()
    try:
        s3.put_object(Bucket=minio.bucket, Key=key, Body=body)
    finally:
        s3.close()


def test_s3_csv_with_endpoint_from_the_environment(
    s3_credentials: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    minio = s3_credentials
    put(minio, "ingest/data.csv", CSV)
    monkeypatch.setenv("CONVEYOR_S3_ENDPOINT", minio.endpoint)
    uri = f"s3://{minio.bucket}/ingest/data.csv"
    metrics, report = ingest({"source": uri}, tmp_path / "d.parquet")
    assert metrics == {"rows": 4, "columns": 3}
    assert report["source"] == {"uri": uri, "sha256": sha256_bytes(CSV), "bytes": len(CSV)}
    assert [c["name"] for c in report["schema"]] == ["x", "colour", "n"]
    assert_is_frame(tmp_path / "d.parquet")


def test_s3_parquet_and_jsonl_with_endpoint_from_config(s3_credentials: S3Endpoint, tmp_path: Path) -> None:
    minio = s3_credentials
    FRAME.to_parquet(tmp_path / "src.parquet", index=False)
    put(minio, "ingest/data.parquet", (tmp_path / "src.parquet").read_bytes())
    # No suffix: the format is sniffed from the first bytes.
    put(minio, "ingest/data-without-suffix", FRAME.to_json(orient="records", lines=True).encode())
    for key in ("ingest/data.parquet", "ingest/data-without-suffix"):
        out = tmp_path / f"{key.replace('/', '_')}.parquet"
        config = {"source": f"s3://{minio.bucket}/{key}", "s3_endpoint": minio.endpoint}
        assert ingest(config, out)[0] == {"rows": 4, "columns": 3}
        assert_is_frame(out)


def test_s3_failures_name_the_object(s3_credentials: S3Endpoint, tmp_path: Path) -> None:
    minio = s3_credentials
    put(minio, "ingest/big.csv", CSV)
    base = {"s3_endpoint": minio.endpoint}
    with pytest.raises(ComponentError, match=rf"source: no object at s3://{minio.bucket}/ingest/absent.csv"):
        ingest({**base, "source": f"s3://{minio.bucket}/ingest/absent.csv"}, tmp_path / "a.parquet")
    with pytest.raises(ComponentError, match=rf"is {len(CSV)} bytes, over the limit of 10 bytes"):
        ingest({**base, "source": f"s3://{minio.bucket}/ingest/big.csv", "max_bytes": 10}, tmp_path / "b.parquet")
    with pytest.raises(ComponentError, match=r"source: no object at s3://no-such-bucket/x.csv"):
        ingest({**base, "source": "s3://no-such-bucket/x.csv"}, tmp_path / "c.parquet")
    assert not list(tmp_path.glob("*.parquet"))


def test_s3_wrong_credentials_do_not_leak(
    s3_credentials: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    minio = s3_credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-for-the-test")
    with pytest.raises(ComponentError, match=r"answered 403") as caught:
        ingest({"source": f"s3://{minio.bucket}/ingest/data.csv", "s3_endpoint": minio.endpoint}, tmp_path / "d")
    assert "wrong-secret" not in str(caught.value)
    assert minio.access_key not in str(caught.value)


# ---------------------------------------------------------------- HTTP (a loopback server)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/data.csv, /stream.csv (no Content-Length), /away (redirect off loopback), anything else 404."""

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/data.csv":
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(CSV)))
            self.end_headers()
            self.wfile.write(CSV)
        elif path == "/stream.csv":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            header, _, rows = CSV.partition(b"\n")
            self.wfile.write(header + b"\n" + rows * 100)
        elif path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://192.0.2.1/data.csv")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_http_csv_from_a_loopback_server(http_base: str, tmp_path: Path) -> None:
    metrics, report = ingest({"source": f"{http_base}/data.csv?token=secret"}, tmp_path / "d.parquet")
    assert metrics == {"rows": 4, "columns": 3}
    # The query string (where signed URLs keep their tokens) is not recorded.
    assert report["source"] == {"uri": f"{http_base}/data.csv", "sha256": sha256_bytes(CSV), "bytes": len(CSV)}
    assert_is_frame(tmp_path / "d.parquet")


def test_http_size_cap_status_and_redirects(http_base: str, tmp_path: Path) -> None:
    out = tmp_path / "d.parquet"
    with pytest.raises(ComponentError, match=rf"data.csv is {len(CSV)} bytes, over max_bytes=20"):
        ingest({"source": f"{http_base}/data.csv", "max_bytes": 20}, out)
    with pytest.raises(ComponentError, match=r"stream.csv is larger than max_bytes=1000"):
        ingest({"source": f"{http_base}/stream.csv", "max_bytes": 1000}, out)
    assert ingest({"source": f"{http_base}/stream.csv"}, out)[0]["rows"] == 400
    with pytest.raises(ComponentError, match=r"missing.csv answered HTTP 404"):
        ingest({"source": f"{http_base}/missing.csv"}, out)
    with pytest.raises(ComponentError, match=r"plain http:// is allowed only for loopback hosts, not '192.0.2.1'"):
        ingest({"source": f"{http_base}/away"}, out)


# ---------------------------------------------------------------- SQL (PostgreSQL)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresEndpoint]:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, a free loopback port), with a table."""
    server = PostgresServer(log_dir=tmp_path_factory.mktemp("postgres-log")).start()
    try:
        endpoint = server.endpoint
        engine = sqlalchemy.create_engine(endpoint.url(with_password=True))
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "CREATE TABLE sales (id integer PRIMARY KEY, amount double precision, price numeric(10, 2),"
                    " region text, returned boolean, sold_at timestamp, units bigint)"
                )
            )
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO sales SELECT i, i * 1.5, i * 0.25, CASE WHEN i % 3 = 0 THEN NULL"
                    " ELSE 'r' || (i % 2) END, i % 4 = 0, timestamp '2024-01-01' + i * interval '1 hour', i * 1000"
                    " FROM generate_series(1, 50) AS i"
                )
            )
        engine.dispose()
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def pg_password(postgres: PostgresEndpoint, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CONVEYOR_TEST_PG_PASSWORD", postgres.password)
    return "CONVEYOR_TEST_PG_PASSWORD"


def test_postgres_query(postgres: PostgresEndpoint, pg_password: str, tmp_path: Path) -> None:
    query = "SELECT * FROM sales WHERE id <= 40 ORDER BY id"
    sql = {"url": postgres.url(), "query": query, "password_env": pg_password}
    metrics, report = ingest({"sql": sql}, tmp_path / "d.parquet")
    assert metrics == {"rows": 40, "columns": 7}
    assert report["source"] == {"uri": postgres.url(), "query": query}
    dtypes = {c["name"]: c["dtype"] for c in report["schema"]}
    assert dtypes["id"] == "int64"
    assert dtypes["amount"] == "float64"
    assert dtypes["price"] == "float64"  # numeric arrives as Decimal; the snapshot holds floats
    assert dtypes["returned"] == "bool"
    assert dtypes["sold_at"].startswith("datetime64")
    assert {c["name"]: c["missing"] for c in report["schema"]}["region"] == 13
    frame = read_dataset(tmp_path / "d.parquet")
    assert frame["id"].tolist() == list(range(1, 41))
    assert frame["price"].iloc[3] == 1.0
    # Reading again gives the same bytes: the snapshot's digest is stable.
    ingest({"sql": sql}, tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "d.parquet").read_bytes()


def test_postgres_table(postgres: PostgresEndpoint, pg_password: str, tmp_path: Path) -> None:
    sql = {"url": postgres.url(), "table": "public.sales", "password_env": pg_password}
    metrics, report = ingest({"sql": sql}, tmp_path / "d.parquet")
    assert metrics == {"rows": 50, "columns": 7}
    assert report["source"]["table"] == "public.sales"
    with pytest.raises(ComponentError, match=r"sql.table: .*nope"):
        ingest({"sql": {**sql, "table": "nope"}}, tmp_path / "e.parquet")


def test_postgres_errors_name_the_server_not_the_password(
    postgres: PostgresEndpoint, pg_password: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sql = {"url": postgres.url(), "query": "SELECT * FROM absent", "password_env": pg_password}
    with pytest.raises(ComponentError, match=r'failed: UndefinedTable: relation "absent" does not exist'):
        ingest({"sql": sql}, tmp_path / "d.parquet")
    monkeypatch.setenv(pg_password, "not-the-password")
    with pytest.raises(ComponentError, match=r"sql: reading from postgresql\+psycopg://conveyor:\*\*\*@") as caught:
        ingest({"sql": {**sql, "query": "SELECT 1"}}, tmp_path / "d.parquet")
    assert "password authentication failed" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    assert postgres.password not in str(caught.value)
