"""A real MinIO server for integration tests (test harness code).

Root credentials are generated per session, the console and self-update are off, data lives in a
temp dir, and the listening address is chosen by the caller: the pod-network gateway when pods
run in network namespaces (so pods and tests reach the same endpoint), else 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from testenv.binaries import Binaries
from testenv.processes import ServerProcess, free_port, http_ok, owned_temp_dir, wait_until


@dataclass(frozen=True)
class S3Endpoint:
    """What a client needs to reach the test MinIO."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (path-style addressing); call ``.close()`` when done."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )


class MinioServer:
    """One MinIO process with a bucket created for the tests."""

    def __init__(
        self,
        binaries: Binaries,
        log_dir: Path,
        host: str = "127.0.0.1",
        bucket: str = "conveyor-test",
    ) -> None:
        self.binaries = binaries
        self.host = host
        self.port = free_port(host)
        self.data_dir = owned_temp_dir("conveyor-minio-")
        self.log_path = log_dir / "minio.log"
        self.bucket = bucket
        self.access_key = "conveyor-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.process: ServerProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def endpoint(self) -> S3Endpoint:
        """Endpoint, credentials and bucket for clients."""
        return S3Endpoint(f"http://{self.host}:{self.port}", self.access_key, self.secret_key, self.bucket)

    def start(self) -> MinioServer:
        """Start MinIO, wait for its readiness endpoint, create the test bucket."""
        began = time.monotonic()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data_dir),
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        self.process = ServerProcess(
            "minio",
            [
                str(self.binaries.minio),
                "server",
                str(self.data_dir / "data"),
                "--address",
                f"{self.host}:{self.port}",
                "--quiet",
            ],
            self.log_path,
            env=env,
        ).start()
        try:
            url = f"http://{self.host}:{self.port}/minio/health/ready"
            wait_until(lambda: http_ok(url), timeout=60, what="MinIO /minio/health/ready", process=self.process)
            s3 = self.endpoint.client()
            try:
                if self.bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
                    s3.create_bucket(Bucket=self.bucket)
            finally:
                s3.close()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def outage(self) -> None:
        """Stop the server but keep its data and port: storage going away mid-run, for fault tests."""
        if self.process is not None:
            self.process.stop()

    def recover(self) -> None:
        """Start again after `outage()`, same address, same data."""
        self.start()

    def stop(self) -> None:
        """Kill MinIO's process group and delete its data."""
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
