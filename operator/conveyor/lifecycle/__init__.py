"""Artifact lifecycle: which stored artifacts are still referenced, and the garbage collection of the rest."""
