"""Conveyor: a Kubernetes-native operator for machine-learning pipelines."""

__version__ = "0.1.0"
