"""The cluster's artifact store: an S3-compatible bucket (MinIO by default). The only importer of boto3.

Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, injected from a
Secret), never from a TaskSpec, status or log line.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from conveyor.storage.digest import hex_of, sha256_file
from conveyor.storage.store import (
    ArtifactMissing,
    DigestMismatch,
    ListedObject,
    StoredArtifact,
    StoreUnavailable,
    blob_key,
    check_document_name,
    sidecar_key,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
F = TypeVar("F", bound=Callable[..., Any])


def _unavailable_on_error(method: F) -> F:
    """Connection failures and server errors become StoreUnavailable, naming the bucket, never credentials."""

    @functools.wraps(method)
    def wrapper(self: S3Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (ArtifactMissing, DigestMismatch):
            raise
        except BotoCoreError as e:
            raise StoreUnavailable(f"artifact store s3://{self.bucket} unreachable: {type(e).__name__}: {e}") from None
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            raise StoreUnavailable(f"artifact store s3://{self.bucket} answered {code}") from None

    return wrapper  # type: ignore[return-value]


class S3Store:
    """An ArtifactStore in s3://bucket/prefix/."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client: S3Client = client or boto3.client(
            "s3",
            endpoint_url=endpoint,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                s3={"addressing_style": "path"},
                max_pool_connections=64,  # the operator's passes share one client (botocore's default is 10)
            ),
        )

    def _key(self, name: str) -> str:
        return self.prefix + name

    def uri_of(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self._key(blob_key(hex_of(digest)))}"

    @_unavailable_on_error
    def exists(self, digest: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(blob_key(hex_of(digest))))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return False
            raise
        return True

    @_unavailable_on_error
    def put_file(self, path: Path) -> StoredArtifact:
        digest = sha256_file(path)
        size = path.stat().st_size
        if not self.exists(digest):
            self.client.upload_file(
                str(path),
                self.bucket,
                self._key(blob_key(hex_of(digest))),
                ExtraArgs={"Metadata": {"sha256": hex_of(digest)}},
            )
        return StoredArtifact(self.uri_of(digest), digest, size)

    @_unavailable_on_error
    def get_file(self, digest: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            try:
                self.client.download_file(self.bucket, self._key(blob_key(hex_of(digest))), str(tmp_path))
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                    raise ArtifactMissing(f"artifact {digest} is not in s3://{self.bucket}/{self.prefix}") from None
                raise
            actual = sha256_file(tmp_path)
            if actual != digest:
                raise DigestMismatch(f"artifact {digest} is corrupt in the store: its content hashes to {actual}")
            tmp_path.replace(dest)
        finally:
            tmp_path.unlink(missing_ok=True)

    def put_document(self, name: str, document: dict[str, Any]) -> str:
        return self.put_text(name, json.dumps(document, indent=2, default=str))  # key order kept: a grid's

    def get_document(self, name: str) -> dict[str, Any] | None:
        text = self.get_text(name)
        if text is None:
            return None
        doc: dict[str, Any] = json.loads(text)
        return doc

    @_unavailable_on_error
    def put_text(self, name: str, text: str) -> str:
        key = self._key("docs/" + check_document_name(name))
        self.client.put_object(Bucket=self.bucket, Key=key, Body=text.encode())
        return f"s3://{self.bucket}/{key}"

    @_unavailable_on_error
    def get_text(self, name: str) -> str | None:
        key = self._key("docs/" + check_document_name(name))
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise
        return bytes(body).decode()

    def put_sidecar(self, digest: str, document: dict[str, Any]) -> str:
        data = json.dumps(document, indent=2, default=str).encode()
        return self.put_raw(sidecar_key(hex_of(digest)), data, "application/json")

    def get_sidecar(self, digest: str) -> dict[str, Any] | None:
        raw = self.get_raw(sidecar_key(hex_of(digest)))
        if raw is None:
            return None
        doc: dict[str, Any] = json.loads(raw)
        return doc

    @_unavailable_on_error
    def list_objects(self, under: str, limit: int | None = None) -> list[ListedObject]:
        out: list[ListedObject] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(under)):
            for obj in page.get("Contents", []):
                if "Key" in obj and "LastModified" in obj:
                    out.append(ListedObject(obj["Key"][len(self.prefix) :], obj["LastModified"], obj.get("Size", 0)))
                if limit is not None and len(out) >= limit:
                    return out
        return out  # S3 lists in key order

    @_unavailable_on_error
    def get_raw(self, key: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(check_document_name(key)))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise
        return bytes(body)

    @_unavailable_on_error
    def put_raw(self, key: str, data: bytes, content_type: str | None = None) -> str:
        full = self._key(check_document_name(key))
        if content_type is None:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, ContentType=content_type)
        return f"s3://{self.bucket}/{full}"

    @_unavailable_on_error
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(check_document_name(key)))

    def close(self) -> None:
        self.client.close()

    @classmethod
    def at(cls, uri: str, endpoint: str | None = None) -> tuple[S3Store, str]:
        """A store on the bucket of `s3://bucket/prefix` with a client of its own, and the key prefix: for
        reading data outside the artifact store. Credentials are read from the environment now, not from
        boto3's default session, which keeps whatever it resolved first for the life of the process."""
        scheme, _, rest = uri.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme != "s3" or not bucket:
            raise ValueError(f"not an S3 prefix URI (s3://bucket/prefix): {uri!r}")
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                          s3={"addressing_style": "path"}),
        )  # fmt: skip
        return cls(bucket, client=client), prefix


def download_object(uri: str, dest: Path, endpoint: str | None = None, max_bytes: int | None = None) -> int:
    """Download `s3://bucket/key` (any object, not a content-addressed artifact) to `dest`; return its size.

    For reading external data (the `ingest` component). The size is checked against `max_bytes` before
    any byte is transferred; the file appears at `dest` only when complete. A missing object is
    ArtifactMissing, an unreachable or refusing endpoint StoreUnavailable, an object over the limit a
    ValueError; no message names credentials.
    """
    scheme, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "s3" or not bucket or not key:
        raise ValueError(f"not an S3 object URI (s3://bucket/key): {uri!r}")
    # A session of its own: credentials are read from the environment now, not from boto3's default
    # session, which keeps whatever it resolved first for the life of the process.
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path"},
        ),
    )
    store = S3Store(bucket, client=client)
    try:
        try:
            size = int(store.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise ArtifactMissing(f"no object at {uri}") from None
            raise
        if max_bytes is not None and size > max_bytes:
            raise ValueError(f"{uri} is {size} bytes, over the limit of {max_bytes} bytes")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            store.client.download_file(bucket, key, str(tmp_path))
            tmp_path.replace(dest)
        finally:
            tmp_path.unlink(missing_ok=True)
    except BotoCoreError as e:
        raise StoreUnavailable(f"s3://{bucket} unreachable: {type(e).__name__}: {e}") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "?")
        raise StoreUnavailable(f"s3://{bucket} answered {code} for {uri}") from None
    finally:
        store.client.close()
    return size


def list_prefix(uri: str, endpoint: str | None = None, limit: int = 100_000) -> list[tuple[str, datetime]]:
    """(key, last modified) of every object under `s3://bucket/prefix` (at most `limit`), for triggers
    that watch a prefix for new data. An unreachable or refusing endpoint is StoreUnavailable."""
    store, prefix = S3Store.at(uri, endpoint)
    try:
        return [(o.key, o.modified) for o in store.list_objects(prefix, limit)]
    finally:
        store.close()
