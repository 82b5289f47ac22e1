"""The work of the `batch-predict` component (the contract is `conveyor.components.batch_predict`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conveyor.components.atomic import atomic_output
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.batch_predict import BatchPredictConfig
from conveyor.components.modelio import load_artifact


def _open(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise ComponentError(f"input 'dataset': no file at {path.name!r}")
    try:
        # pre_buffer=False: pyarrow otherwise keeps every row group it has read, so memory grows with rows.
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise ComponentError(f"input 'dataset' is not a readable Parquet dataset: {exc}") from exc


def _output_names(config: BatchPredictConfig, classes: list[Any] | None) -> list[str]:
    names = [*config.passthrough, config.output_column]
    if config.include_probabilities and classes is not None:
        names += [f"{config.output_column}_proba_{c}" for c in classes]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ComponentError(f"output_column: {name!r} would be written twice (check passthrough)")
        seen.add(name)
    return names


def _predict(model: Any, batch: pa.RecordBatch, signature: list[str], config: BatchPredictConfig) -> pa.Table:
    features = batch.select(signature).to_pandas()
    try:
        arrays = [batch.column(c) for c in config.passthrough]
        arrays.append(pa.array(np.asarray(model.predict(features))))
        if config.include_probabilities:
            proba = np.asarray(model.predict_proba(features), dtype=np.float64)
            arrays += [pa.array(proba[:, i]) for i in range(proba.shape[1])]
    except (ValueError, TypeError) as exc:
        raise ComponentError(f"the model could not predict input 'dataset': {exc}") from exc
    return pa.Table.from_arrays(
        arrays, names=_output_names(config, list(model.classes_) if hasattr(model, "classes_") else None)
    )


def run(config: BatchPredictConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Predict every row of `dataset` with `model`, one chunk at a time; write `predictions`."""
    loaded = load_artifact(inputs["model"], kind="model")
    model, meta = loaded.obj, loaded.metadata
    if config.include_probabilities and not hasattr(model, "predict_proba"):
        raise ComponentError(f"include_probabilities: the model ({meta.estimator}) has no predict_proba")
    source = _open(inputs["dataset"])
    present = set(source.schema_arrow.names)
    signature = [f.name for f in meta.inputs]
    for field, columns in (("model inputs", signature), ("passthrough", config.passthrough)):
        missing = [c for c in columns if c not in present]
        if missing:
            raise ComponentError(f"{field}: column {missing[0]!r} is not in input 'dataset'")
    _output_names(config, list(meta.classes) if meta.classes is not None else None)
    if source.metadata.num_rows == 0:
        raise ComponentError("input 'dataset' is empty (0 rows)")
    needed = list(dict.fromkeys([*signature, *config.passthrough]))
    rows = chunks = 0
    with atomic_output(outputs["predictions"]) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for batch in source.iter_batches(batch_size=config.chunk_rows, columns=needed):
                table = _predict(model, batch, signature, config)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd", write_statistics=True)
                writer.write_table(table.cast(writer.schema), row_group_size=config.chunk_rows)
                rows += table.num_rows
                chunks += 1
        finally:
            if writer is not None:
                writer.close()
    return {"rows": float(rows), "chunks": float(chunks)}
