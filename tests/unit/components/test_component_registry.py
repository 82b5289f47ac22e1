"""The component registry: names, lazy imports, and the error for an unknown name."""

from __future__ import annotations

import importlib
import sys

import pytest

from conveyor.components.base import Component, ComponentConfig
from conveyor.components.registry import UnknownComponentError, component_names, get_component

EXPECTED = ["evaluate", "ingest", "preprocess", "split", "train", "validate"]


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


def test_importing_the_registry_does_not_import_the_ml_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    heavy = ("sklearn", "scipy", "pandas", "skops", "pyarrow")
    package = sys.modules["conveyor.components"]
    for module in list(sys.modules):
        if module.split(".")[0] in heavy:
            monkeypatch.delitem(sys.modules, module)
        elif module.startswith("conveyor.components."):
            monkeypatch.delitem(sys.modules, module)
            # The re-import rebinds the package attribute; put the original back afterwards.
            child = module.removeprefix("conveyor.components.")
            if "." not in child and hasattr(package, child):
                monkeypatch.setattr(package, child, getattr(package, child))
    importlib.import_module("conveyor.components.registry")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    assert loaded == []
