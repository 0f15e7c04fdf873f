"""Stage 1, the host: the GPU and process picture of a training machine (the `nvidia-smi` and `ps` step).

Owns NVML access through nvidia-ml-py (`nvml`, every field degrading to "unavailable: reason"),
training-process discovery with psutil (`processes`) and the combined report with its per-GPU
diagnosis lines (`snapshot`). It may import the diagnosis vocabulary (`core.diagnosis.catalogue`,
`core.diagnosis.hypotheses`) to word its findings, and the shared leaves; never logs or the model stage.
"""
