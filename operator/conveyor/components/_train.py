"""The work of the `train` component (the contract is `conveyor.components.train`): build, fit, save the pipeline."""

from __future__ import annotations

import importlib
import json
import math
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.pipeline import Pipeline

from conveyor.components.atomic import json_safe
from conveyor.components.base import ComponentError, Metrics
from conveyor.components.datasets import read_dataset, require_columns, require_rows, split_label
from conveyor.components.modelio import (
    OUTPUT_PREDICT,
    OUTPUT_PROBA,
    PROFILE_QUANTILES,
    PROFILE_TOP_CATEGORIES,
    ArtifactMetadata,
    CategoryCount,
    FeatureProfile,
    FeatureSpec,
    Scalar,
    load_artifact,
    save_artifact,
)
from conveyor.components.train import TrainConfig

ALLOWED_ESTIMATOR_PREFIX = "sklearn."


def build_estimator(path: str, params: Mapping[str, Any], seed: int) -> Any:
    """Import and configure the estimator, turning every mistake into an error naming the path or param."""
    if not path.startswith(ALLOWED_ESTIMATOR_PREFIX):
        raise ComponentError(f"estimator: {path!r} is not allowed; only scikit-learn estimators (sklearn.*)")
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ComponentError(f"estimator: unknown estimator {path!r} (no module {module_name!r})") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
        raise ComponentError(f"estimator: unknown estimator {path!r} (no estimator class {class_name!r})")
    try:
        estimator = cls()
    except TypeError as exc:
        raise ComponentError(f"estimator: {path!r} cannot be built from params alone: {exc}") from exc
    if not (is_classifier(estimator) or is_regressor(estimator)):
        raise ComponentError(f"estimator: {path!r} is neither a classifier nor a regressor")
    accepted = estimator.get_params(deep=False)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ComponentError(
            f"params: {path!r} has no parameter {unknown[0]!r} (parameters: {', '.join(sorted(accepted))})"
        )
    settings = dict(params)
    if "random_state" in accepted and "random_state" not in settings:
        settings["random_state"] = seed
    estimator.set_params(**settings)
    return estimator


@dataclass(frozen=True)
class TrainingData:
    """The `train` input, read and checked, and the fitted transformer (if any) its features go through."""

    features: pd.DataFrame
    """The model's raw inputs, in the order of its input signature."""
    y: pd.Series
    transformer: Any
    text_columns: list[str]
    """The columns the transformer vectorizes as free text (profiled as text)."""

    def model_input(self) -> Any:
        """What the estimator is fitted on: the features through the transformer, if there is one."""
        return self.features if self.transformer is None else self.transformer.transform(self.features)

    def pipeline(self, estimator: Any) -> Pipeline:
        """The servable model: the transformer exactly as `preprocess` fitted it, then the fitted estimator."""
        if self.transformer is None:
            return Pipeline([("model", estimator)])
        return Pipeline([("preprocess", self.transformer), ("model", estimator)])


def _features(frame: pd.DataFrame, label: str, transformer: Any, signature: list[str]) -> pd.DataFrame:
    features, _ = split_label(frame, label, "train")
    if transformer is None:
        non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c].dtype)]
        if non_numeric:
            raise ComponentError(
                f"column {non_numeric[0]!r} is not numeric; add a preprocess step and pass its 'transformer'"
            )
        return features
    if label in signature:
        raise ComponentError(f"label: column {label!r} is an input of the transformer; set label in preprocess too")
    require_columns(frame, signature, "train", "transformer inputs")
    return frame[signature]


def read_training_data(inputs: Mapping[str, Path], label: str) -> TrainingData:
    """Read `train` and the optional `transformer`, rejecting empty data and a missing or leaking label."""
    frame = read_dataset(inputs["train"], "train")
    require_rows(frame, "train")
    require_columns(frame, [label], "train", "label")
    transformer: Any = None
    signature: list[str] = []
    text_columns: list[str] = []
    if "transformer" in inputs:
        loaded = load_artifact(inputs["transformer"], kind="transformer")
        transformer = loaded.obj
        signature = [f.name for f in loaded.metadata.inputs]
        text_columns = transformer_text_columns(loaded.metadata.params)
    features = _features(frame, label, transformer, signature)
    return TrainingData(features=features, y=frame[label], transformer=transformer, text_columns=text_columns)


def recorded_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings caught while fitting, once each, sorted: kept in the model's metadata rather than printed and lost."""
    return sorted({f"{w.category.__name__}: {w.message}" for w in caught})


def save_model(
    estimator: Any, data: TrainingData, estimator_path: str, label: str, fit_warnings: list[str], out: Path
) -> None:
    """Save the fitted estimator behind the transformer as the servable model artifact, with its metadata."""
    task: Literal["classification", "regression"] = "classification" if is_classifier(estimator) else "regression"
    classes = json_safe(list(estimator.classes_)) if task == "classification" else None
    features = data.features
    metadata = ArtifactMetadata(
        kind="model",
        estimator=estimator_path,
        task=task,
        label=label,
        classes=classes,
        inputs=[FeatureSpec(name=c, dtype=str(features[c].dtype)) for c in features.columns],
        outputs=[OUTPUT_PREDICT, OUTPUT_PROBA] if hasattr(estimator, "predict_proba") else [OUTPUT_PREDICT],
        params=_describe_params(estimator),
        fit_warnings=fit_warnings,
        profile=profile_features(features, data.text_columns),
    )
    save_artifact(data.pipeline(estimator), out, metadata)


def run(config: TrainConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Fit the estimator on `train` (through the fitted transformer) and save the pipeline to `model`."""
    estimator = build_estimator(config.estimator, config.params, config.seed)
    data = read_training_data(inputs, config.label)
    with warnings.catch_warnings(record=True) as caught:
        # Convergence and similar warnings are facts about this fit: recorded in the model's
        # metadata and counted in the metrics rather than printed and lost.
        warnings.simplefilter("always")
        try:
            estimator.fit(data.model_input(), data.y)
        except (ValueError, TypeError) as exc:
            raise ComponentError(f"estimator {config.estimator!r} failed to fit: {exc}") from exc
    fit_warnings = recorded_warnings(caught)
    save_model(estimator, data, config.estimator, config.label, fit_warnings, outputs["model"])
    return {
        "train_rows": float(len(data.features)),
        "input_features": float(data.features.shape[1]),
        "fit_warnings": float(len(fit_warnings)),
    }


def _describe_params(estimator: Any) -> dict[str, Any]:
    """The estimator's resolved constructor parameters as JSON; nested objects are recorded by repr."""
    described: dict[str, Any] = {}
    for name, value in estimator.get_params(deep=False).items():
        plain = json_safe(value)
        try:
            json.dumps(plain, allow_nan=False)
        except (TypeError, ValueError):
            plain = repr(value)
        described[name] = plain
    return described


def transformer_text_columns(params: Mapping[str, Any]) -> list[str]:
    """The columns a `preprocess` transformer vectorizes as free text (from its recorded config)."""
    columns = params.get("text_columns", [])
    return [str(c) for c in columns] if isinstance(columns, list) else []


def profile_features(features: pd.DataFrame, text_columns: Collection[str] = ()) -> list[FeatureProfile]:
    """The training data's profile (see `modelio.FeatureProfile`), one entry per column of `features`.

    Routed like `preprocess` routes columns: numeric dtypes but booleans are numeric, the
    transformer's text columns are text, everything else is categorical.
    """
    profiles = []
    for column in features.columns:
        series = features[column]
        dtype = series.dtype
        if column in text_columns:
            profiles.append(_categorical_profile(str(column), series, "text"))
        elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            profiles.append(_numeric_profile(str(column), series))
        else:
            profiles.append(_categorical_profile(str(column), series, "categorical"))
    return profiles


def _stable(value: float) -> float | None:
    """`value` rounded to 12 significant digits (None if not finite): the same digits on any machine."""
    return float(f"{value:.12g}") if math.isfinite(value) else None


def _numeric_profile(name: str, series: pd.Series) -> FeatureProfile:
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    present = values[np.isfinite(values)]
    count, missing = len(present), len(values) - len(present)
    if count == 0:
        return FeatureProfile(name=name, kind="numeric", count=0, missing=missing)
    cuts = np.quantile(present, [p for _, p in PROFILE_QUANTILES])
    return FeatureProfile(
        name=name,
        kind="numeric",
        count=count,
        missing=missing,
        mean=_stable(float(np.mean(present))),
        std=_stable(float(np.std(present))),
        min=_stable(float(present.min())),
        max=_stable(float(present.max())),
        quantiles={key: float(f"{cut:.12g}") for (key, _), cut in zip(PROFILE_QUANTILES, cuts.tolist(), strict=True)},
    )


def _category(value: Any) -> Scalar:
    plain = json_safe(value)
    return plain if isinstance(plain, str | int | float | bool) else str(plain)


def _categorical_profile(name: str, series: pd.Series, kind: Literal["categorical", "text"]) -> FeatureProfile:
    present = series.dropna()
    counts = present.value_counts(sort=False)
    ranked = sorted(
        ((_category(value), int(n)) for value, n in counts.items() if n > 0),
        key=lambda item: (-item[1], str(item[0]), type(item[0]).__name__),
    )
    return FeatureProfile(
        name=name,
        kind=kind,
        count=len(present),
        missing=len(series) - len(present),
        distinct=len(ranked),
        top=[
            CategoryCount(value=value, count=n, frequency=float(f"{n / len(present):.12g}"))
            for value, n in ranked[:PROFILE_TOP_CATEGORIES]
        ],
    )
