"""Detectors: each reads one kind of evidence (metric series, error text, code) and returns hypotheses."""
