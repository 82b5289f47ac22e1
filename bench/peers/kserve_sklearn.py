"""KServe's Python model server for a scikit-learn model, as KServe's sklearnserver does it (benchmark peer).

Runs inside the KServe venv made by bench/serving_bench.py, never in the project's own venv. The
sklearnserver image is not published as a Python package, so this is its model class in a few lines:
a `kserve.Model` whose `load` reads the joblib file and whose `predict` turns the request into the
model's input with kserve's own `get_predict_input` (a v2 request with `"content_type": "pd"`
becomes a DataFrame, one column per input) and the answer into a v2 response with
`get_predict_response`. Served by `kserve.ModelServer` on one uvicorn worker, REST only (gRPC off),
per-request latency logging off, and no access log (`--configure_logging false`, which kserve's own
argument parser reads from the command line: uvicorn's access logger then has no handler).

Usage: python kserve_sklearn.py --http-port P --model NAME=PATH [--model ...] --configure_logging false
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import kserve
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.model: Any = None
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        instances = get_predict_input(payload)
        return get_predict_response(payload, self.model.predict(instances), self.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a joblib file")
    args, _ = parser.parse_known_args()  # the rest is kserve's own (--configure_logging)
    models = [SKLearnModel(*spec.split("=", 1)) for spec in args.model]
    kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port or args.http_port + 1,
        workers=args.workers,
        enable_grpc=False,
        enable_latency_logging=False,
    ).start(models)


if __name__ == "__main__":
    main()
