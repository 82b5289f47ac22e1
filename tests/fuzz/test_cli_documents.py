"""Fuzzing the CLI's path from a file to a verdict: `conveyor validate` on generated YAML exits 0 or 2 with
a message, never a traceback; documents over the size, nesting or alias-expansion limits are refused fast
and in little memory.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.cli.main import main
from conveyor.core.documents import MAX_DEPTH, MAX_DOCUMENT_BYTES
from fuzz.figures import FIGURES
from fuzz.strategies import any_yaml, documents

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def validate(text: str) -> tuple[int, str, str]:
    """`conveyor validate FILE` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.yaml"
        path.write_text(text)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue()


def check(text: str) -> None:
    code, out, err = validate(text)
    FIGURES[f"CLI validate exit {code}"] += 1
    assert code in (0, 2), (code, out, err)
    if code == 2:
        assert err.startswith("error: ") and "Traceback" not in err, err
    else:
        assert out.endswith("is valid\n"), out


@settings(FUZZ, max_examples=200)
@given(documents)
def test_generated_documents_through_the_cli(doc: Any) -> None:
    check(yaml.safe_dump(doc))


@settings(FUZZ, max_examples=150)
@given(any_yaml, any_yaml)
def test_any_kind_or_api_version_through_the_cli(kind: Any, api_version: Any) -> None:
    check(yaml.safe_dump({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {}}))


def alias_bomb(width: int, levels: int) -> str:
    """A Pipeline whose one setting expands to width**levels scalars (the billion laughs)."""
    lines = [f"x0: &a0 [{','.join(['lol'] * width)}]"]
    lines += [f"x{n}: &a{n} [{','.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels)]
    return (
        "apiVersion: conveyor.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: b}\n"
        + "\n".join(lines)
        + f"\nspec: {{steps: [{{name: a, uses: ingest, with: {{source: *a{levels - 1}}}}}]}}\n"
    )


def refused_quickly(text: str, fragment: str) -> None:
    tracemalloc.start()
    began = time.perf_counter()
    try:
        code, _, err = validate(text)
        seconds = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2 and fragment in err, err
    assert seconds < 5, f"took {seconds:.1f} s"
    assert peak < 64 * 2**20 + 4 * len(text), f"peak {peak / 2**20:.0f} MiB"
    FIGURES["over-limit documents refused"] += 1


@settings(FUZZ, max_examples=25)
@given(st.integers(9, 14), st.integers(7, 9))
def test_alias_bombs_are_refused_fast_in_little_memory(width: int, levels: int) -> None:
    refused_quickly(alias_bomb(width, levels), "aliases expand the file to more than")


def test_a_bomb_of_the_reports_size() -> None:
    """The report's was 389 bytes, 2.5 GB and 23-47 s; this one, 453 bytes, took 1.3 GB and 8-14 s before
    the limits, 0.5 s and 56 MB (the interpreter's) after."""
    text = alias_bomb(9, 7)
    assert len(text) < 500
    refused_quickly(text, "aliases expand the file to more than")


@settings(FUZZ, max_examples=25)
@given(st.integers(MAX_DEPTH + 1, 20_000), st.sampled_from(["[{}]", "{{a: {}}}", "- {}"]))
def test_deep_nesting_is_refused(depth: int, shape: str) -> None:
    if shape == "- {}":  # block sequences, indented one level further each time (kept under 1 MB)
        depth = min(depth, 700)
        text = "a:\n" + "".join(" " * (2 * i + 1) + "-\n" for i in range(depth)) + " " * (2 * depth + 1) + "x\n"
    else:
        opening, closing = shape.split("{}")
        text = "a: " + opening * depth + "x" + closing * depth + "\n"
    refused_quickly(text, f"nested more than {MAX_DEPTH} levels deep")


@settings(FUZZ, max_examples=5)
@given(st.integers(1, 1000))
def test_documents_over_the_api_servers_object_limit_are_refused(extra: int) -> None:
    head = "apiVersion: conveyor.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: big}\nspec:\n  steps: []\n"
    text = head + "#" * (MAX_DOCUMENT_BYTES - len(head) + extra) + "\n"
    refused_quickly(text, "over the limit of 1,572,864 bytes")


def test_a_document_at_the_limit_is_read() -> None:
    head = (
        "apiVersion: conveyor.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: big}\n"
        "spec:\n  steps: [{name: a, uses: ingest, with: {source: 'sklearn://iris'}}]\n"
    )
    code, out, err = validate(head + "#" * (MAX_DOCUMENT_BYTES - len(head) - 1) + "\n")
    assert code == 0 and "is valid" in out, err
