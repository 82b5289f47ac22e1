"""The breast-cancer-halving example of pipeline.yaml, written in Python: tuning by successive halving.

conveyor compile examples/breast-cancer-halving/pipeline.py -o pipeline.yaml
"""

from conveyor import sdk


@sdk.pipeline(name="breast-cancer-halving")
def halving(
    seed: int = 42,
    strategy: str = sdk.param("halving-grid", "halving-grid, halving-random, grid or random."),
    factor: float = sdk.param(
        3, "Each halving round keeps 1/factor of the candidates and gives them factor times the rows."
    ),
    min_roc_auc: float = sdk.param(0.95, "The gate's minimum ROC AUC on the test set."),
) -> None:
    """Tune a random forest on the Wisconsin breast cancer data by successive halving, then gate it."""
    ingest = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://breast_cancer"})
    split = sdk.step(
        "split",
        uses="split",
        inputs={"dataset": ingest.outputs.dataset},
        with_={"label": "target", "strategy": "stratified", "test_size": 0.2, "seed": seed},
    )
    preprocess = sdk.step(
        "preprocess", uses="preprocess", inputs={"train": split.outputs.train}, with_={"label": "target"}
    )
    tune = sdk.step(
        "tune",
        uses="tune",
        resources=sdk.Resources(cpu="2"),
        inputs={"train": split.outputs.train, "transformer": preprocess.outputs.transformer},
        with_={
            "label": "target",
            "estimator": "sklearn.ensemble.RandomForestClassifier",
            "params": {"n_estimators": 50},
            "space": {
                "max_depth": [3, 6, None],
                "max_features": ["sqrt", 0.3, 0.6],
                "min_samples_leaf": [1, 4],
            },
            "strategy": strategy,
            "factor": factor,
            "metric": "roc_auc",
            "cv": 5,
            "n_jobs": 2,
            "seed": seed,
        },
    )
    sdk.step(
        "evaluate",
        uses="evaluate",
        inputs={"model": tune.outputs.model, "test": split.outputs.test},
        with_={"label": "target"},
    )
    sdk.step(
        "gate",
        uses="gate",
        inputs={"candidate": tune.outputs.model, "evaluation": split.outputs.test},
        with_={"label": "target", "thresholds": {"roc_auc": {"min": min_roc_auc}, "brier": {"max": 0.1}}},
    )
