"""The component registry: names, contracts that import no ML library, and the error for an unknown name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conveyor.components.base import Component, ComponentConfig
from conveyor.components.registry import UnknownComponentError, component_names, get_component

EXPECTED = [
    "batch-predict",
    "evaluate",
    "export",
    "gate",
    "ingest",
    "preprocess",
    "select-best",
    "split",
    "train",
    "tune",
    "validate",
]


def test_component_names_lists_every_builtin() -> None:
    assert component_names() == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_get_component_returns_a_complete_component(name: str) -> None:
    component = get_component(name)
    assert isinstance(component, Component)
    assert component.name == name
    assert issubclass(component.config, ComponentConfig)
    assert component.outputs
    assert not component.required_inputs & component.optional_inputs
    assert component.description


def test_unknown_component_names_the_known_ones() -> None:
    with pytest.raises(UnknownComponentError) as caught:
        get_component("trian")
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)
    assert "'trian'" in message
    for name in EXPECTED:
        assert name in message


# What `get_component` and reading a contract must not import: the validator and the operator use both.
ML_STACK = ("sklearn", "scipy", "pandas", "numpy", "pyarrow", "skops", "matplotlib")

# Run in a fresh interpreter: only there is "what did these imports load" observable.
_READ_EVERY_CONTRACT = """
import json, sys
from conveyor.components import modelio
from conveyor.components.registry import component_names, get_component
for name in component_names():
    component = get_component(name)
    component.config.model_json_schema()
    component.required_inputs, component.optional_inputs, component.outputs
print(json.dumps({
    "contracts": sorted(m for m in sys.modules if m.startswith("conveyor.components.")),
    "ml_stack": sorted(m for m in sys.modules if m.split(".")[0] in %r),
}))
"""


def test_reading_every_contract_does_not_import_the_ml_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _READ_EVERY_CONTRACT % (ML_STACK,)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded = json.loads(result.stdout)
    assert {f"conveyor.components.{name.replace('-', '_')}" for name in EXPECTED} <= set(loaded["contracts"])
    assert loaded["ml_stack"] == []
