"""Fuzzing document names: `check_document_name` refuses a name, or the document lands inside the store.

Names are built from the pieces path traversal is made of (`..`, `.`, empty segments, leading and
doubled slashes, backslashes, `~`, NUL, unicode look-alikes of dot and slash) and from arbitrary text.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.storage.local import LocalStore
from conveyor.storage.s3 import S3Store
from conveyor.storage.store import check_document_name
from fuzz.figures import FIGURES

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

PIECES = [
    "..",
    ".",
    "",
    "a",
    "runs",
    "x.json",
    "~",
    "\\",
    "..\\..",
    "\x00",
    "\u2024\u2024",
    "\u2215",
    "\uff0f",
    "%2e%2e",
    "ü",
    " ",
    "...",
    "C:",
    "\n",
]
segment = st.one_of(st.sampled_from(PIECES), st.text(min_size=0, max_size=6))
names = st.one_of(
    st.lists(segment, min_size=1, max_size=5).map("/".join),
    st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    st.lists(segment, min_size=1, max_size=4).map("\\".join),
    st.text(max_size=20),
)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@settings(FUZZ, max_examples=600)
@given(name=names)
def test_a_document_name_is_refused_or_stays_inside_the_local_store(tmp_path: Path, name: str) -> None:
    FIGURES["document names generated"] += 1
    try:
        check_document_name(name)
    except ValueError:
        FIGURES["document names refused"] += 1
        return
    home = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh store per example: no earlier document in the way
    store = LocalStore(home / "store")
    docs = store.root / "docs"
    if "\x00" in name:  # accepted by the check; the operating system refuses it before any file is touched
        FIGURES["accepted names with NUL, refused by the file system"] += 1
        with pytest.raises(ValueError, match="null byte"):
            store.put_text(name, "payload")
        return
    target = (docs / name).resolve()
    assert _inside(target, docs), f"{name!r} resolves to {target}, outside {docs}"
    try:
        uri = store.put_text(name, "payload")
    except OSError:  # e.g. a segment longer than the file system allows
        FIGURES["accepted names the file system refused"] += 1
        return
    FIGURES["accepted names written"] += 1
    written = Path(uri.removeprefix("file://"))
    assert _inside(Path(os.path.realpath(written)), docs)
    assert store.get_text(name) == "payload"
    for p in home.rglob("*"):
        assert _inside(p.resolve(), store.root), p


class _RecordingClient:
    """Stands in for boto3: records the keys the S3 store would write."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def put_object(self, **kwargs: Any) -> None:
        self.keys.append(kwargs["Key"])


@settings(FUZZ, max_examples=300)
@given(name=names, prefix=st.sampled_from(["", "team-a", "a/b/"]))
def test_a_document_name_is_refused_or_keyed_under_the_s3_prefix(name: str, prefix: str) -> None:
    client = _RecordingClient()
    store = S3Store("bucket", prefix=prefix, client=client)
    try:
        store.put_text(name, "payload")
    except ValueError:
        return
    (key,) = client.keys
    expected = (prefix.strip("/") + "/" if prefix else "") + "docs/"
    assert key.startswith(expected)
    assert ".." not in key.split("/") and "" not in key.split("/") and "." not in key.split("/")
