"""The numpy fast path: used only when bit-identical to the pipeline, refused for what it does not implement."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, PolynomialFeatures, StandardScaler

from conveyor.serving.fastpath import PARALLEL_ROWS, NotCompilable, TreeWalk, compile_fast_path

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
    pytest.param(
        ColumnTransformer([("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NAMES)]),
        RandomForestRegressor(n_estimators=15, random_state=0),
        id="forest-regression",
    ),
    pytest.param(
        ColumnTransformer([("num", SimpleImputer(), NAMES)]),
        ExtraTreesClassifier(n_estimators=12, min_samples_leaf=3, random_state=0),
        id="extra-trees",
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


FORESTS = [
    RandomForestClassifier(n_estimators=25, random_state=0),
    RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0),
    ExtraTreesClassifier(n_estimators=8, random_state=1),
]


@pytest.mark.parametrize("forest", FORESTS, ids=lambda f: type(f).__name__)
def test_forests_are_walked_tree_by_tree_with_the_forests_own_sums(forest: Any) -> None:
    pipeline = fitted(ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), NAMES)]), forest)
    fast, reason = compile_fast_path(pipeline, NAMES)
    assert fast is not None and fast.trees is not None, reason
    assert "trees walked one by one" in reason
    frame, _ = data(n=2000, seed=7)
    features = pipeline.steps[0][1].transform(frame)
    if fast.trees.classes is not None:
        np.testing.assert_array_equal(fast.trees.mean(features), forest.predict_proba(features))
        predicted, proba = fast.trees.predict(features, False)
        assert proba is None
    else:
        predicted, _ = fast.trees.predict(features, True)
    np.testing.assert_array_equal(predicted, forest.predict(features))


@pytest.mark.parametrize("threads", [2, 3, 7])
def test_a_big_batch_walked_by_several_threads_gives_the_same_bits(threads: int) -> None:
    forest = RandomForestClassifier(n_estimators=20, random_state=0)
    pipeline = fitted(ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), NAMES)]), forest)
    fast, reason = compile_fast_path(pipeline, NAMES, tree_threads=threads)
    assert fast is not None and fast.trees is not None and fast.trees.threads == threads, reason
    frame, _ = data(n=3000, seed=3)
    matrix = frame.to_numpy(dtype=np.float64)
    assert len(matrix) >= PARALLEL_ROWS
    predicted, proba = fast.predict(matrix, True)
    np.testing.assert_array_equal(proba, pipeline.predict_proba(frame))
    np.testing.assert_array_equal(predicted, pipeline.predict(frame))


def test_a_classifier_with_string_classes_answers_with_its_labels() -> None:
    frame, y = data()
    labels = np.array(["benign", "malignant"])[y]
    transformer = ColumnTransformer([("num", SimpleImputer(), NAMES)]).fit(frame)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(transformer.transform(frame), labels)
    fast, reason = compile_fast_path(Pipeline([("preprocess", transformer), ("model", forest)]), NAMES)
    assert fast is not None and fast.trees is not None, reason
    predicted, _ = fast.predict(frame.to_numpy(dtype=np.float64), False)
    assert set(predicted) <= {"benign", "malignant"}
    np.testing.assert_array_equal(predicted, forest.predict(transformer.transform(frame)))


@pytest.mark.parametrize(
    ("estimator", "reason"),
    [
        (LogisticRegression().fit([[0.0], [1.0]], [0, 1]), "estimator LogisticRegression"),
        (
            RandomForestRegressor(n_estimators=2, random_state=0).fit([[0.0], [1.0], [2.0]], [[0, 1], [1, 2], [2, 3]]),
            "multi-output",
        ),
    ],
    ids=["not-a-forest", "multi-output"],
)
def test_what_the_tree_walk_does_not_implement(estimator: Any, reason: str) -> None:
    with pytest.raises(NotCompilable, match=reason):
        TreeWalk.of(estimator)


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
