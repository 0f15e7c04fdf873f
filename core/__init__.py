"""The analysis library behind the MCP tools, grouped by the stage of the debugging decision tree.

`logs` (gather evidence from the log) · `host` (gather evidence from the GPUs and processes) ·
`diagnosis` (classify the failure) · `model` (inspect the model: gradients, shapes, checkpoints) ·
`record` (journal the fix, lock it in with a regression test). The shared leaves `paths`,
`user_regex` and `plot` serve every stage. Imports run one way, from later stages to earlier ones
(record → model → diagnosis → logs; host → diagnosis), never back, and nothing here imports `mcp`:
the same functions back the MCP tools, the human CLI and a Python API.
"""
