"""The catalogue of built-in components, by the name a pipeline step uses (`component: train`).

Importing this module is cheap, and so is `get_component`: it imports only the component's
contract module (configuration model, inputs, outputs), which leaves pandas, scikit-learn and
the rest of the ML stack to the private implementation module its `run` imports. The operator
and `conveyor validate` can therefore list names and check specs without loading them.
"""

from __future__ import annotations

import importlib

from conveyor.components.base import Component

# name → module defining `COMPONENT`; the single place a new built-in component is registered.
_MODULES: dict[str, str] = {
    "ingest": "conveyor.components.ingest",
    "validate": "conveyor.components.validate",
    "split": "conveyor.components.split",
    "preprocess": "conveyor.components.preprocess",
    "train": "conveyor.components.train",
    "tune": "conveyor.components.tune",
    "evaluate": "conveyor.components.evaluate",
    "select-best": "conveyor.components.select_best",
    "gate": "conveyor.components.gate",
    "batch-predict": "conveyor.components.batch_predict",
    "export": "conveyor.components.export",
}


class UnknownComponentError(KeyError):
    """A step names a component that does not exist; the message lists the ones that do."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.message = f"unknown component {name!r}; known components: {', '.join(component_names())}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def component_names() -> list[str]:
    """The names of every built-in component, sorted."""
    return sorted(_MODULES)


def get_component(name: str) -> Component:
    """Import the named component's module and return its `Component`."""
    module_name = _MODULES.get(name)
    if module_name is None:
        raise UnknownComponentError(name)
    component = importlib.import_module(module_name).COMPONENT
    if not isinstance(component, Component) or component.name != name:
        raise TypeError(f"{module_name}.COMPONENT is not the Component {name!r}")
    return component
