"""A throw-away certificate authority for one test control plane (test harness code).

The apiserver verifies clients by certificate and the clients verify the apiserver against the
same CA, so nothing needs ``verify=False`` (which would raise InsecureRequestWarning under
``filterwarnings = error``). Keys are made with the openssl CLI because the venv has no
``cryptography`` package; EC keys keep generation fast.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_DAYS = "3"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class CertificateAuthority:
    """Self-signed CA in ``directory`` that issues serving and client certificates."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.cert = directory / "ca.crt"
        self.key = directory / "ca.key"
        _openssl(
            "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(self.key), "-out", str(self.cert), "-days", _DAYS, "-subj", "/CN=conveyor-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organization: str | None = None,
        ip_sans: tuple[str, ...] = (),
        dns_sans: tuple[str, ...] = (),
        server: bool = False,
    ) -> KeyPair:
        """Issue ``name``.crt/.key; client certs carry the user (CN) and group (O) the apiserver sees."""
        pair = KeyPair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        csr = self.directory / f"{name}.csr"
        subject = f"/CN={common_name}" + (f"/O={organization}" if organization else "")
        _openssl(
            "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(pair.key), "-out", str(csr), "-subj", subject,
        )  # fmt: skip
        ext_lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={'serverAuth,clientAuth' if server else 'clientAuth'}",
        ]
        sans = [f"IP:{ip}" for ip in ip_sans] + [f"DNS:{dns}" for dns in dns_sans]
        if sans:
            ext_lines.append("subjectAltName=" + ",".join(sans))
        ext = self.directory / f"{name}.ext"
        ext.write_text("\n".join(ext_lines) + "\n")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(pair.cert), "-days", _DAYS, "-extfile", str(ext),
        )  # fmt: skip
        csr.unlink()
        ext.unlink()
        return pair


def service_account_keys(directory: Path) -> KeyPair:
    """RSA key pair that signs and verifies service-account tokens (cert field holds the public key)."""
    key = directory / "sa.key"
    pub = directory / "sa.pub"
    _openssl("genrsa", "-out", str(key), "2048")
    _openssl("rsa", "-in", str(key), "-pubout", "-out", str(pub))
    return KeyPair(cert=pub, key=key)
