"""The numpy fast path: used only when bit-identical to the pipeline, refused for what it does not implement."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, PolynomialFeatures, StandardScaler

from conveyor.serving.fastpath import compile_fast_path

NAMES = ["a", "b", "c", "d"]


def data(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=[1, -2, 10, 0], scale=[1, 3, 5, 0.1], size=(n, 4))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) > -1).astype(int)
    return pd.DataFrame(x, columns=NAMES), y


def fitted(transformer: ColumnTransformer, estimator: Any) -> Pipeline:
    """The train component's shape: the transformer fitted first, the estimator on its ndarray output."""
    frame, y = data()
    transformer.fit(frame)
    estimator.fit(transformer.transform(frame), y)
    return Pipeline([("preprocess", transformer), ("model", estimator)])


COMPILED = [
    pytest.param(
        ColumnTransformer([("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NAMES)]),
        LogisticRegression(),
        id="impute-standardize-lr",
    ),
    pytest.param(
        ColumnTransformer(
            [
                ("x", make_pipeline(SimpleImputer(), MinMaxScaler(clip=True)), ["b", "a"]),
                ("y", SimpleImputer(strategy="constant", fill_value=0.0), ["d"]),
                ("z", make_pipeline(SimpleImputer(), StandardScaler(with_mean=False)), ["c"]),
            ]
        ),
        RandomForestClassifier(n_estimators=10, random_state=0),
        id="groups-minmax-constant-rf",
    ),
    pytest.param(
        ColumnTransformer([("num", SimpleImputer(), ["a", "b"]), ("rest", "drop", ["c", "d"])]),
        LinearRegression(),
        id="dropped-columns-regression",
    ),
]


@pytest.mark.parametrize(("transformer", "estimator"), COMPILED)
def test_compiled_paths_are_bit_identical(transformer: ColumnTransformer, estimator: Any) -> None:
    pipeline = fitted(transformer, estimator)
    fast, reason = compile_fast_path(pipeline, NAMES)
    assert fast is not None, reason
    assert reason.startswith("used: bit-identical")
    frame, _ = data(n=500, seed=1)
    frame.iloc[3] = np.nan  # a row with every value missing
    for rows in (frame.iloc[:1], frame.iloc[:7], frame):
        matrix = rows.to_numpy(dtype=np.float64)
        has_proba = hasattr(pipeline, "predict_proba")
        predicted, proba = fast.predict(matrix, has_proba)
        np.testing.assert_array_equal(predicted, pipeline.predict(rows))
        if has_proba:
            assert proba is not None
            np.testing.assert_array_equal(proba, pipeline.predict_proba(rows))


def test_infinity_is_refused_as_the_pipeline_refuses_it() -> None:
    pipeline = fitted(COMPILED[0].values[0], LogisticRegression())  # type: ignore[arg-type]
    fast, _ = compile_fast_path(pipeline, NAMES)
    assert fast is not None
    row = np.array([[1.0, np.inf, 0.0, 0.0]])
    with pytest.raises(ValueError, match="infinity"):
        pipeline.predict(pd.DataFrame(row, columns=NAMES))
    with pytest.raises(ValueError, match="infinity"):
        fast.predict(row, False)


NOT_COMPILED = [
    pytest.param(
        lambda: fitted(
            ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler(), PolynomialFeatures()), NAMES)]),
            LogisticRegression(),
        ),
        "transformer PolynomialFeatures",
        id="unknown-transformer",
    ),
    pytest.param(
        lambda: fitted(ColumnTransformer([("num", SimpleImputer(add_indicator=True), NAMES)]), LogisticRegression()),
        "indicator",
        id="imputer-indicator",
    ),
    pytest.param(
        lambda: fitted(ColumnTransformer([("num", SimpleImputer(), [0, 1, 2, 3])]), LogisticRegression()),
        "columns not selected by name",
        id="columns-by-position",
    ),
    pytest.param(
        lambda: Pipeline([("model", LogisticRegression())]).fit(data()[0].fillna(0), data()[1]),
        "not a two-step Pipeline",
        id="no-transformer",
    ),
    pytest.param(
        lambda: Pipeline(
            [
                ("preprocess", ColumnTransformer([("n", SimpleImputer(), NAMES)]).set_output(transform="pandas")),
                ("model", LogisticRegression()),
            ]
        ).fit(data()[0], data()[1]),
        "ndarray output",
        id="pandas-output",
    ),
    pytest.param(
        lambda: fitted(
            ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["a"]), ("n", SimpleImputer(), ["b"])]),
            LogisticRegression(),
        ),
        "sparse output",
        id="categorical-encoder",
    ),
]


@pytest.mark.parametrize(("build", "reason"), NOT_COMPILED)
def test_what_it_does_not_implement_stays_on_the_pipeline(build: Any, reason: str) -> None:
    fast, why = compile_fast_path(build(), NAMES)
    assert fast is None
    assert reason in why
