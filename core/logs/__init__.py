"""Stage 1, the log: read the end of a (huge, growing) log, cut out its error blocks, parse metric series.

Owns the tail and its polling cursor (`tail`), error-block extraction (`error_blocks`), the metric
parsers for every trainer's format (`formats/`, with `metrics` as the entry point) and the series model
(`series`). It may import only the shared leaves (`core.paths`, `core.user_regex`); it knows nothing
of diagnosis, so a log can be read without any opinion about it.
"""
