"""Detectors: each reads one kind of evidence and returns hypotheses, knowing nothing of the others.

`series_checks` runs the metric-series detectors (`series_curves` on the loss, `series_signals` on
gradient norms, update ratios and RL signals, sharing `series_common`), `error_text` classifies error
messages and tracebacks, `code_scan` finds anti-patterns in a training script with `ast`. The
orchestrator in `core.diagnosis.classify` ranks what they return.
"""
