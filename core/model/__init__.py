"""Stage 3, inspection: gradient health, tensor shapes and checkpoints of the user's real model.

User code never runs in the server: `worker` starts `worker_main` (a standalone file run by path under
the user's interpreter, importing only torch and the standard library) with a timeout and memory
limit. `gradients`, `shapes` and `checkpoints` turn its results into reports; `probe` is the
in-training `TrainingProbe`. It may import the diagnosis vocabulary and the shared leaves.
"""
