"""The work of the `preprocess` component (the contract is `conveyor.components.preprocess`): route, fit, save."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)

from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, require_columns, require_rows
from conveyor.components.modelio import ArtifactMetadata, FeatureSpec, class_path, save_artifact
from conveyor.components.preprocess import PreprocessConfig


def _numeric_pipeline(config: PreprocessConfig) -> Pipeline:
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=config.numeric_imputation))]
    if config.scaling == "standard":
        steps.append(("scale", StandardScaler()))
    elif config.scaling == "minmax":
        steps.append(("scale", MinMaxScaler()))
    return Pipeline(steps)


def _impute_missing(strategy: str, fill_value: str | None = None) -> list[tuple[str, SimpleImputer]]:
    """Impute both spellings of "missing" in non-numeric columns.

    Parquet reads give NaN, but serving rows decoded from JSON give None, which an imputer
    looking for NaN leaves alone; the second imputer catches those.
    """
    return [
        ("impute", SimpleImputer(strategy=strategy, fill_value=fill_value)),
        ("impute_none", SimpleImputer(missing_values=None, strategy=strategy, fill_value=fill_value)),
    ]


def _categorical_pipeline(config: PreprocessConfig) -> Pipeline:
    encoder: OneHotEncoder | OrdinalEncoder
    if config.categorical_encoding == "onehot":
        encoder = OneHotEncoder(handle_unknown="ignore")
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    return Pipeline([*_impute_missing("most_frequent"), ("encode", encoder)])


def _text_pipeline(config: PreprocessConfig) -> Pipeline:
    # Imputing keeps a missing document from failing TF-IDF; np.ravel (a numpy function, which
    # skops can persist) turns the one-column matrix into the 1-D documents TF-IDF wants.
    return Pipeline(
        [
            *_impute_missing("constant", fill_value=""),
            ("flatten", FunctionTransformer(np.ravel, feature_names_out="one-to-one")),
            ("tfidf", TfidfVectorizer(max_features=config.tfidf_max_features)),
        ]
    )


def build_transformer(features: pd.DataFrame, config: PreprocessConfig) -> ColumnTransformer:
    """Route each feature column by dtype to its pipeline (unfitted)."""
    text = list(config.text_columns)
    numeric: list[str] = []
    categorical: list[str] = []
    for column in features.columns:
        if column in text:
            continue
        dtype = features[column].dtype
        if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
            raise ComponentError(
                f"column {column!r} has dtype {dtype}, which preprocess cannot encode; "
                "derive numeric features from it or list it in drop_columns"
            )
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            numeric.append(column)
        else:
            categorical.append(column)
    parts: list[tuple[str, Any, Any]] = []
    if numeric:
        parts.append(("num", _numeric_pipeline(config), numeric))
    if categorical:
        parts.append(("cat", _categorical_pipeline(config), categorical))
    parts.extend((f"text{i}", _text_pipeline(config), [column]) for i, column in enumerate(text))
    if not parts:
        raise ComponentError("input 'train' has no feature columns besides the label and drop_columns")
    return ColumnTransformer(parts, remainder="drop")


def run(config: PreprocessConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Fit the transformer on `train` and save it to `transformer`."""
    frame = read_dataset(inputs["train"], "train")
    require_rows(frame, "train")
    if config.label is not None:
        require_columns(frame, [config.label], "train", "label")
    require_columns(frame, config.drop_columns, "train", "drop_columns")
    require_columns(frame, config.text_columns, "train", "text_columns")
    excluded = {*config.drop_columns, *([config.label] if config.label else [])}
    features = frame.drop(columns=[c for c in frame.columns if c in excluded])
    transformer = build_transformer(features, config)
    try:
        transformer.fit(features)
    except ValueError as exc:  # e.g. a text column with no words, an all-missing column
        raise ComponentError(f"preprocess could not fit on 'train': {exc}") from exc
    names = [str(n) for n in transformer.get_feature_names_out()]
    metadata = ArtifactMetadata(
        kind="transformer",
        estimator=class_path(transformer),
        label=config.label,
        inputs=[FeatureSpec(name=c, dtype=str(features[c].dtype)) for c in features.columns],
        outputs=names,
        params=config.model_dump(mode="json"),
    )
    save_artifact(transformer, outputs["transformer"], metadata)
    return {"input_features": float(features.shape[1]), "output_features": float(len(names))}
