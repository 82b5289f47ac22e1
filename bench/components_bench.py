"""The components benchmark: validate and batch-predict over a large Parquet dataset, one child process each.

Every operation runs in a fresh child interpreter that imports the component and runs it on files,
as a step pod would, so its wall time includes the imports and its peak RSS (`ru_maxrss` of that
child alone, from `os.wait4`) is the memory a step of that kind needs. Operations:

  imports only    the interpreter with the ML stack imported: the floor under every other figure
  generate        ROWS rows (20 float columns with 1% missing values, 3 string categorical columns,
                  a binary label) and a REFERENCE_ROWS reference sample of the same distribution
  train           preprocess + logistic regression on the reference sample (setup for batch-predict)
  validate-schema validate ROWS rows against a schema inferred from the reference (a saved baseline)
  validate-ref    validate ROWS rows against the reference dataset itself (schema plus drift tests)
  batch-predict   the registered `batch-predict` component over ROWS rows (chunked by pyarrow batches)

Usage: .venv/bin/python bench/components_bench.py [--rows 1000000] [--reference-rows 100000] [--workdir DIR]
Prints one JSON document with machine facts and per-operation wall seconds, peak RSS and rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLOAT_COLUMNS = 20
CATEGORIES = {"region": 8, "channel": 4, "segment": 30}


# ---------------------------------------------------------------- work done inside the children


def generate(path: Path, rows: int, seed: int) -> None:
    """Synthetic rows written with pyarrow in row groups of 100k (the generator itself stays small)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=FLOAT_COLUMNS)
    writer: pq.ParquetWriter | None = None
    try:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            x = rng.normal(size=(n, FLOAT_COLUMNS))
            logit = x @ weights / np.sqrt(FLOAT_COLUMNS)
            columns: dict[str, Any] = {}
            for i in range(FLOAT_COLUMNS):
                col = x[:, i].copy()
                col[rng.random(n) < 0.01] = np.nan
                columns[f"f{i:02d}"] = pa.array(col, from_pandas=True)
            for name, k in CATEGORIES.items():
                codes = rng.integers(0, k, n)
                logit += (codes % 2 - 0.5) * 0.5
                columns[name] = pa.array([f"{name}-{c}" for c in codes.tolist()])
            columns["label"] = pa.array((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64))
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def run_component(name: str, config: dict[str, Any], inputs: dict[str, str], outputs: dict[str, str]) -> None:
    from conveyor.components.base import ComponentError
    from conveyor.components.registry import get_component

    component = get_component(name)
    try:
        metrics = component.run(
            component.config.model_validate(config),
            {k: Path(v) for k, v in inputs.items()},
            {k: Path(v) for k, v in outputs.items()},
        )
    except ComponentError as exc:  # a failed validation still did all the work being measured
        metrics = {"component_error": 1.0}
        print(f"component error: {str(exc)[:300]}", file=sys.stderr)
    print(json.dumps(metrics))


def child_main(spec: dict[str, Any]) -> None:
    if spec["op"] == "imports":
        import pandas  # noqa: F401

        print("{}")
    elif spec["op"] == "generate":
        generate(Path(spec["path"]), spec["rows"], spec["seed"])
        print("{}")
    else:
        run_component(spec["component"], spec["config"], spec["inputs"], spec["outputs"])


# ---------------------------------------------------------------- the parent: one child per operation


def measure(label: str, spec: dict[str, Any], rows: int | None) -> dict[str, Any]:
    """Run `spec` in a fresh interpreter; its own wall time, peak RSS (wait4) and last stdout line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed with exit code {proc.returncode}")
    lines = out.strip().splitlines()
    result: dict[str, Any] = {
        "operation": label,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "metrics": json.loads(lines[-1]) if lines else {},
    }
    if rows:
        result["rows"] = rows
        result["rows_per_second"] = round(rows / wall)
    print(json.dumps(result), file=sys.stderr)
    return result


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line
    )
    versions = {}
    for lib in ("pandas", "pyarrow", "numpy", "scipy", "scikit-learn"):
        from importlib.metadata import version

        versions[lib] = version(lib)
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "libraries": versions,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="batch-predict chunk size")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir, removed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    with tempfile.TemporaryDirectory(prefix="conveyor-components-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        f = {name: str(work / name) for name in ("data", "reference", "transformer", "model", "schema", "report")}
        results = [
            measure("imports only (pandas, pyarrow, scipy, scikit-learn)", {"op": "imports"}, None),
            measure("generate", {"op": "generate", "path": f["data"], "rows": args.rows, "seed": 1}, args.rows),
            measure(
                "generate-reference",
                {"op": "generate", "path": f["reference"], "rows": args.reference_rows, "seed": 2},
                args.reference_rows,
            ),
        ]
        component = {"op": "component"}
        results.append(
            measure(
                "baseline-schema (validate the reference)",
                {
                    **component,
                    "component": "validate",
                    "config": {"label": "label", "on_failure": "warn"},
                    "inputs": {"dataset": f["reference"]},
                    "outputs": {"schema": f["schema"], "report": f["report"] + "-0"},
                },
                args.reference_rows,
            )
        )
        results.append(
            measure(
                "train (preprocess + fit on the reference)",
                {
                    **component,
                    "component": "preprocess",
                    "config": {"label": "label"},
                    "inputs": {"train": f["reference"]},
                    "outputs": {"transformer": f["transformer"]},
                },
                None,
            )
        )
        results.append(
            measure(
                "train (fit)",
                {
                    **component,
                    "component": "train",
                    "config": {"estimator": "sklearn.linear_model.LogisticRegression", "label": "label"},
                    "inputs": {"train": f["reference"], "transformer": f["transformer"]},
                    "outputs": {"model": f["model"]},
                },
                None,
            )
        )
        results.append(
            measure(
                "validate against a schema",
                {
                    **component,
                    "component": "validate",
                    "config": {"label": "label", "on_failure": "warn"},
                    "inputs": {"dataset": f["data"], "schema": f["schema"]},
                    "outputs": {"schema": f["schema"] + "-1", "report": f["report"] + "-1"},
                },
                args.rows,
            )
        )
        results.append(
            measure(
                "validate against a reference (schema + drift)",
                {
                    **component,
                    "component": "validate",
                    "config": {"label": "label", "on_failure": "warn"},
                    "inputs": {"dataset": f["data"], "reference": f["reference"]},
                    "outputs": {"schema": f["schema"] + "-2", "report": f["report"] + "-2"},
                },
                args.rows,
            )
        )
        results.append(
            measure(
                "batch-predict",
                {
                    **component,
                    "component": "batch-predict",
                    "config": {"chunk_rows": args.chunk_rows},
                    "inputs": {"model": f["model"], "dataset": f["data"]},
                    "outputs": {"predictions": str(work / "predictions")},
                },
                args.rows,
            )
        )
        data_bytes = Path(f["data"]).stat().st_size
    command = " ".join([".venv/bin/python", "bench/components_bench.py", *sys.argv[1:]])
    print(
        json.dumps(
            {"machine": machine(), "command": command, "data_parquet_bytes": data_bytes, "results": results}, indent=2
        )
    )


if __name__ == "__main__":
    main()
