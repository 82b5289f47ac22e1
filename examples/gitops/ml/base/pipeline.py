"""The nightly breast-cancer pipeline of pipeline.yaml beside this file, written in Python (kustomize reads
only the YAML: regenerate it with `conveyor compile examples/gitops/ml/base/pipeline.py -o pipeline.yaml`)."""

from conveyor import sdk


@sdk.pipeline(
    name="breast-cancer",
    max_concurrent_runs=1,
    schedule=sdk.Schedule(
        cron="0 3 * * *",
        time_zone="UTC",
        concurrency_policy=sdk.ConcurrencyPolicy.FORBID,
        successful_runs_history_limit=7,
        failed_runs_history_limit=7,
    ),
)
def nightly(test_size: float = 0.25, seed: int = 42, n_estimators: int = 200, min_roc_auc: float = 0.95) -> None:
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
        with_={"label": "target", "scaling": "standard"},
    )
    train = sdk.step(
        "train",
        uses="train",
        retries=sdk.RetryPolicy(limit=1, backoff=sdk.Backoff(initial_seconds=5)),
        inputs={"train": split.outputs.train, "transformer": preprocess.outputs.transformer},
        with_={
            "label": "target",
            "estimator": "sklearn.ensemble.RandomForestClassifier",
            "params": {"n_estimators": n_estimators},
            "seed": seed,
        },
    )
    sdk.step(
        "evaluate",
        uses="evaluate",
        inputs={"model": train.outputs.model, "test": split.outputs.test},
        with_={"label": "target"},
    )
    sdk.step(
        "gate",
        uses="gate",
        inputs={"candidate": train.outputs.model, "evaluation": split.outputs.test},
        with_={"label": "target", "thresholds": {"roc_auc": {"min": min_roc_auc}}},
    )
