"""The model server: Open Inference Protocol v2 over HTTP for one digest-verified model artifact.

Layers, lowest first: `errors` (typed errors with their HTTP status), `codec` (the protocol's
bodies to and from numpy, pure), `model` (fetching, verifying and loading the artifact, and
turning decoded rows into the model's input), `batcher` (adaptive micro-batching), `metrics`,
`monitoring` (sampled predictions and labels to a store), `dataplane` (the operations,
independent of transport), `rest` (the ASGI adapter) and `server` (process wiring, signals,
logs). `python -m conveyor.serving` runs it. Importing this package has no side effects.
"""
