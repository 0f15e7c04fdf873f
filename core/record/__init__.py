"""Stage 4, record and lock in: the debugging journal and the generated regression test.

Owns the locked, append-only markdown journal (`journal`) and create_smoke_test's engine (`smoke`),
whose test sources are real files under `templates/`. It may import the diagnosis vocabulary, the
model stage's worker (to run a generated test apart) and the shared leaves.
"""
