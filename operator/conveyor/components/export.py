"""The `export` component: convert a saved model to ONNX, and prove the conversion on real data.

Input `model` is the artifact `train` wrote: the whole scikit-learn Pipeline, fitted
preprocessing included, so the ONNX graph applies the same imputation, scaling and encoding as
the server. skl2onnx converts it with one graph input per feature column (numeric columns as a
`[N, 1]` tensor, string columns as a string tensor); ONNX names must be identifiers, so a
column's input name may differ from the column (`mean radius` → `mean_radius`): the report lists
the mapping, and so does the ONNX model's metadata (`conveyor.inputs`). A model trained without a
`transformer` has a single input `X`, the numeric feature matrix in the model's column order.
The graph's bytes are reproducible (fixed graph name, no timestamps), like every artifact.

The conversion is then checked, not trusted: onnxruntime and scikit-learn both predict the
required input `evaluation` (a dataset with the model's feature columns), and the step fails when
the share of rows where they disagree exceeds `max_mismatch_rate`, naming that rate. For a
classifier a row disagrees when the predicted class differs or, for one with probabilities, when
any class's probability differs by more than `proba_atol` (default 1e-4); for a regressor when the
values differ by more than `atol + rtol * |scikit-learn's value|`. The report gives the largest
difference seen (`max_proba_difference`, `max_abs_difference`) either way.

Precision: `float64` keeps scikit-learn's arithmetic but onnxruntime lacks double kernels for some
operators (the ONNX-ML Imputer, tree ensembles before opset 3 of ai.onnx.ml); `float32` runs
everywhere and can flip a class only for rows within float32 rounding of a decision boundary.
`auto` tries float64 and falls back to float32 when converting or loading fails; the report says
which one was used and why.

Known limit: skl2onnx cannot convert scikit-learn's SimpleImputer over string columns with a
NaN marker, which `preprocess` puts in front of categorical columns; such a pipeline fails to
export with an error naming the converter's complaint.

This module is the contract, cheap to import; the work (skl2onnx, onnxruntime, pandas) is in `_export`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field

from conveyor.components.base import Component, ComponentConfig, Metrics


class ExportConfig(ComponentConfig):
    """How to convert, and how closely ONNX must agree with scikit-learn."""

    precision: Literal["auto", "float32", "float64"] = "auto"
    """Tensor type of numeric inputs; `auto`: float64 when onnxruntime can run it, else float32."""
    max_mismatch_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Largest share of evaluation rows on which the predictions may disagree."""
    rtol: float = Field(default=1e-4, ge=0.0)
    """Regression: relative tolerance of the comparison."""
    atol: float = Field(default=1e-4, ge=0.0)
    """Regression: absolute tolerance of the comparison."""
    proba_atol: float = Field(default=1e-4, ge=0.0)
    """Classifiers: the largest difference allowed between ONNX's and scikit-learn's probability of any
    class on a row. float32 arithmetic moves a logistic regression's probabilities on breast_cancer by
    about 1e-7; 1e-4 leaves room for that and catches a conversion that shifts them visibly."""
    target_opset: int | None = Field(default=None, ge=7)
    """ONNX opset to target; default: the newest the installed skl2onnx supports."""


def run(config: ComponentConfig, inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> Metrics:
    """Convert `model` to `onnx`, check it on `evaluation`, and write `report`."""
    from conveyor.components import _export  # noqa: PLC0415  # the ML stack loads when a step runs, not on import

    assert isinstance(config, ExportConfig)
    return _export.run(config, inputs, outputs)


COMPONENT = Component(
    name="export",
    config=ExportConfig,
    run=run,
    required_inputs=frozenset({"model", "evaluation"}),
    outputs=frozenset({"onnx", "report"}),
    description="Convert a model (with its preprocessing) to ONNX; fail unless onnxruntime agrees with scikit-learn.",
)
