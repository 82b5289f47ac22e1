"""The breast-cancer example of pipeline.yaml, written in Python.

conveyor compile examples/breast-cancer/pipeline.py -o pipeline.yaml
"""

from conveyor import sdk


@sdk.pipeline(name="breast-cancer")
def breast_cancer(
    test_size: float = sdk.param(0.25, "Share of rows held out for evaluation."),
    seed: int = 42,
    scaling: str = sdk.param("standard", "standard, minmax or none."),
    estimator: str = "sklearn.ensemble.RandomForestClassifier",
    n_estimators: int = 200,
) -> None:
    """Classify breast tumours as malignant or benign (Wisconsin diagnostic dataset)."""
    ingest = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://breast_cancer"})
    validate = sdk.step(
        "validate", uses="validate", inputs={"dataset": ingest.outputs.dataset}, with_={"label": "target"}
    )
    split = sdk.step(
        "split",
        uses="split",
        depends_on=[validate],
        inputs={"dataset": ingest.outputs.dataset},
        with_={"label": "target", "strategy": "stratified", "test_size": test_size, "seed": seed},
    )
    preprocess = sdk.step(
        "preprocess",
        uses="preprocess",
        inputs={"train": split.outputs.train},
        with_={"label": "target", "scaling": scaling},
    )
    train = sdk.step(
        "train",
        uses="train",
        retries=sdk.RetryPolicy(limit=1, backoff=sdk.Backoff(initial_seconds=1)),
        inputs={"train": split.outputs.train, "transformer": preprocess.outputs.transformer},
        with_={"label": "target", "estimator": estimator, "params": {"n_estimators": n_estimators}, "seed": seed},
    )
    sdk.step(
        "evaluate",
        uses="evaluate",
        inputs={"model": train.outputs.model, "test": split.outputs.test},
        with_={"label": "target"},
    )
