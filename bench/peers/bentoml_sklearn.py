"""A BentoML service for a scikit-learn model that answers the Open Inference Protocol v2 body (benchmark peer).

Runs inside the BentoML venv made by bench/serving_bench.py (`bentoml serve bentoml_sklearn:SklearnV2`),
never in the project's own venv. It is BentoML's documented service shape: a class under
`@bentoml.service` that loads the model once in `__init__` (here the joblib file named by
BENTO_SKLEARN_MODEL) and a sync `@bentoml.api` method, which BentoML runs in its thread pool, its
arguments validated by BentoML from the JSON body's fields. The API's arguments are the v2 request's
own fields (`inputs`, `parameters`) and its route is `/v2/models/NAME/infer`, so it receives the same
bytes as the other servers: one [N] tensor per feature, made into a DataFrame for the pipeline's
ColumnTransformer. One worker (`workers=1`), the access log off.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import joblib
import numpy as np
import pandas as pd

MODEL_NAME = os.environ.get("BENTO_SKLEARN_NAME", "model")
MODEL_PATH = os.environ.get("BENTO_SKLEARN_MODEL", "model.joblib")


@bentoml.service(workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class SklearnV2:
    def __init__(self) -> None:
        self.model = joblib.load(MODEL_PATH)

    @bentoml.api(route=f"/v2/models/{MODEL_NAME}/infer")
    def infer(self, inputs: list[dict[str, Any]], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        frame = pd.DataFrame({i["name"]: np.asarray(i["data"], dtype=np.float32) for i in inputs})
        predicted = self.model.predict(frame)
        return {
            "model_name": MODEL_NAME,
            "outputs": [
                {"name": "predict", "shape": [len(predicted)], "datatype": "INT64", "data": predicted.tolist()}
            ],
        }
