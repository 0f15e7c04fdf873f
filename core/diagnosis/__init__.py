"""Stage 2, classification: name the failure with evidence, confidence, fixes and the next tool calls.

Owns the failure taxonomy and fix table (`catalogue`), the shape of a diagnosis (`hypotheses`), the
detectors over metric series, error text and training code (`detectors/`), the orchestrator that
merges them (`classify`), before/after verification (`compare`) and the evaluation harness
(`evaluate`). It may read `core.logs` and the shared leaves; the later stages (host, model, record)
may import its vocabulary, never the other way round.
"""
