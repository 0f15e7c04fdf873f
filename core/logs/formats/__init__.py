"""The metric-parser library: one module per family of formats, all feeding one `Collector`.

`common` (number tokens, rank prefixes, step keys, the collector), `text` (console line formats),
`bulk` (the fast path for big text logs: learned line shapes), `tables` (CSV/TSV, Lightning, MLflow
metric files) and `stores` (trainer_state.json, TensorBoard events, run directories). Entry points
live in `core.logs.metrics`; these modules may import `core.logs.series` and the shared leaves only.
"""
