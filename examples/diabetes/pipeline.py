"""The diabetes example of pipeline.yaml, written in Python.

conveyor compile examples/diabetes/pipeline.py -o pipeline.yaml
"""

from conveyor import sdk


@sdk.pipeline
def diabetes(
    test_size: float = sdk.param(0.25, "Share of rows held out for evaluation."),
    seed: int = 42,
    alpha: float = sdk.param(1.0, "Ridge regularisation strength."),
    min_r2: float = sdk.param(0.3, "The gate's minimum R² on the test set."),
) -> None:
    """Predict diabetes progression one year on from baseline measurements (regression)."""
    ingest = sdk.step("ingest", uses="ingest", with_={"source": "sklearn://diabetes"})
    dataset = ingest.outputs.dataset
    validate = sdk.step("validate", uses="validate", inputs={"dataset": dataset}, with_={"label": "target"})
    split = sdk.step(
        "split",
        uses="split",
        depends_on=[validate],
        inputs={"dataset": dataset},
        with_={"strategy": "random", "test_size": test_size, "seed": seed},
    )
    preprocess = sdk.step(
        "preprocess", uses="preprocess", inputs={"train": split.outputs.train}, with_={"label": "target"}
    )
    train = sdk.step(
        "train",
        uses="train",
        inputs={"train": split.outputs.train, "transformer": preprocess.outputs.transformer},
        with_={"label": "target", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": alpha}},
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
        with_={"label": "target", "thresholds": {"r2": {"min": min_r2}}},
    )
