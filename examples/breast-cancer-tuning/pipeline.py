"""The breast-cancer-tuning example of pipeline.yaml, written in Python: tuning as a fan-out over a grid.

conveyor compile examples/breast-cancer-tuning/pipeline.py -o pipeline.yaml
"""

from conveyor import sdk


@sdk.pipeline(name="breast-cancer-tuning")
def tuning(
    seed: int = 42,
    min_roc_auc: float = sdk.param(0.95, "The gate's minimum ROC AUC on the test set."),
) -> None:
    """Tune a random forest on the Wisconsin breast cancer data, keep the best trial, gate it."""
    ingest = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://breast_cancer"})
    split = sdk.step(
        "split",
        uses="split",
        inputs={"dataset": ingest.outputs.dataset},
        with_={"label": "target", "strategy": "stratified", "test_size": 0.2, "seed": seed},
    )
    holdout = sdk.step(
        "split-validation",
        uses="split",
        inputs={"dataset": split.outputs.train},
        with_={"label": "target", "strategy": "stratified", "test_size": 0.25, "seed": seed},
    )
    preprocess = sdk.step(
        "preprocess", uses="preprocess", inputs={"train": holdout.outputs.train}, with_={"label": "target"}
    )
    # One trial per point of the grid (the first key varies slowest), at most 4 at a time.
    trials = sdk.step(
        "train",
        uses="train",
        for_each={"max_depth": [2, 6], "n_estimators": [10, 40], "max_features": ["sqrt", 0.5]},
        max_concurrency=4,
        inputs={"train": holdout.outputs.train, "transformer": preprocess.outputs.transformer},
        with_={
            "label": "target",
            "estimator": "sklearn.ensemble.RandomForestClassifier",
            "params": {
                "max_depth": sdk.item.max_depth,
                "n_estimators": sdk.item.n_estimators,
                "max_features": sdk.item.max_features,
            },
            "seed": seed,
        },
    )
    best = sdk.step(
        "select",
        uses="select-best",
        inputs={"models": trials.outputs.model, "validation": holdout.outputs.test},
        with_={"label": "target", "metric": "roc_auc"},
    )
    sdk.step(
        "evaluate",
        uses="evaluate",
        inputs={"model": best.outputs.model, "test": split.outputs.test},
        with_={"label": "target", "slices": ["mean radius"]},
    )
    sdk.step(
        "gate",
        uses="gate",
        inputs={"candidate": best.outputs.model, "evaluation": split.outputs.test},
        with_={"label": "target", "thresholds": {"roc_auc": {"min": min_roc_auc}, "brier": {"max": 0.1}}},
    )
