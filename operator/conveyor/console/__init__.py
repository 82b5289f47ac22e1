"""The web console (`conveyor ui`): runs, a Run's DAG, logs and artifacts, comparisons, an artifact's
lineage and the pipelines, in the browser.

Layers: `source` reads a state (the local runner's directory now; a cluster later) into records,
`views`, `lineage` and `pipelines` turn them into what the browser may see (pure, redacted), `app` is
the ASGI application serving pages, the JSON API and the static front end, `server` runs it under uvicorn.
"""
