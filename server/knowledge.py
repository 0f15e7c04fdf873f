"""Knowledge served as MCP resources and prompts, plus local files as a resource template.

The guides are markdown shipped in `ml_debug_mcp.resources`; the thresholds and the failure
catalogue are rendered from `core.catalogue`, so the numbers an agent reads are the numbers the
detectors use.
"""

from __future__ import annotations

import os
from importlib import resources as importlib_resources

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.resources import ResourceSecurity

from ml_debug_mcp.core import safe_fs
from ml_debug_mcp.core.paths import PathOutsideRoots
from ml_debug_mcp.tools._base import ToolEnv

JOURNAL_RESOURCE_MAX_BYTES = 512 << 10
FILE_RESOURCE_MAX_LINES = 200


def guide_text(name: str) -> str:
    return importlib_resources.files("ml_debug_mcp.resources").joinpath(name).read_text(encoding="utf-8")


def register_knowledge(mcp: MCPServer, env: ToolEnv) -> None:
    @mcp.resource("guide://decision-tree", name="decision-tree", title="Agent decision tree",
                  description="The order to debug a training run in: evidence, classify, inspect, fix, record.",
                  mime_type="text/markdown")
    def decision_tree() -> str:
        return guide_text("decision-tree.md")

    @mcp.resource("guide://thresholds", name="thresholds", title="Health thresholds",
                  description="Update-ratio bands, gradient-norm topology, early-warning and verification thresholds.",
                  mime_type="text/markdown")
    def thresholds() -> str:
        from ml_debug_mcp.core.diagnosis.catalogue import render_thresholds_markdown

        return render_thresholds_markdown()

    @mcp.resource("guide://failure-catalogue", name="failure-catalogue", title="Failure catalogue",
                  description="Every failure classify_failure knows: symptoms, root causes, fixes and expected effect.",
                  mime_type="text/markdown")
    def failure_catalogue() -> str:
        from ml_debug_mcp.core.diagnosis.catalogue import render_catalogue_markdown

        return render_catalogue_markdown()

    @mcp.resource("guide://research-debug", name="research-debug", title="Root-cause analysis workflow",
                  description="Evidence, triangulation table, fix-and-verify and write-up for hard failures.",
                  mime_type="text/markdown")
    def research_debug() -> str:
        return guide_text("research-debug.md")

    @mcp.resource("journal://{+path}", name="journal", title="Debugging journal",
                  description="A journal file inside the roots (e.g. journal://journal.md), as write_journal keeps it.",
                  mime_type="text/markdown", security=ResourceSecurity(exempt_params=frozenset({"path"})))
    def journal(path: str) -> str:
        target = _inside_roots(env, path)
        if not target.is_file():
            return f"No journal at {target} yet. write_journal creates it with the first entry."
        text = _read_small(target)
        if text is not None:  # journals are small: the whole record, header and all
            return text
        size = target.stat().st_size
        return (f"[{target} is {size:,} bytes: showing its last {FILE_RESOURCE_MAX_LINES} lines; older entries "
                "are in the file itself]\n" + _tail_text(target))

    @mcp.resource("file:///{+path}", name="file", title="A local file's tail",
                  description=(f"The last {FILE_RESOURCE_MAX_LINES} lines of a text file inside the roots, "
                               "e.g. file:///abs/path/train.log. Use tail_log for cursors, grep and metrics."),
                  mime_type="text/plain", security=ResourceSecurity(exempt_params=frozenset({"path"})))
    def local_file(path: str) -> str:
        target = _inside_roots(env, "/" + path.lstrip("/"))
        if target.is_dir():
            raise ResourceError(f"{target} is a directory. Call tail_log with path={str(target)!r} to list its logs.")
        if target.exists() and not target.is_file():
            raise ResourceError(f"{target} is not a regular file (a pipe, socket or device): nothing to tail.")
        if not target.is_file():
            raise ResourceError(f"{target} does not exist. Call tail_log with a directory to list the logs in it.")
        return _tail_text(target)

    # RFC 8089 allows the local host by name: file://localhost/abs/path is the same file.
    mcp.resource("file://localhost/{+path}", name="file_localhost", title="A local file's tail (localhost form)",
                 description="The same as file:///{path}, for clients that write the host.", mime_type="text/plain",
                 security=ResourceSecurity(exempt_params=frozenset({"path"})))(local_file)

    @mcp.prompt(name="debug_training_run", title="Debug a training run",
                description="Walk the decision tree for one training log, from evidence to journal and regression test.")
    def debug_training_run(log_path: str, code_path: str | None = None) -> str:
        code = f" The training script is {code_path}; pass it as code_path to classify_failure." if code_path else ""
        return (
            f"Debug the training run whose log is {log_path}.{code}\n\n"
            "Follow the decision tree (resource guide://decision-tree):\n"
            f"1. Evidence: call tail_log(path={log_path!r}) and read the errors, last metrics and whether the "
            "file is still being written; call gpu_status() to see whether the process is alive and the GPU "
            "state; call read_metrics with plot=true if the curve shape matters.\n"
            f"2. Classify: call classify_failure(log_path={log_path!r}"
            + (f", code_path={code_path!r}" if code_path else "")
            + "). If the top hypothesis is below 0.8 confidence, make the calls listed in its next_steps and "
            "needs_more_evidence, then classify again.\n"
            "3. Inspect: for gradient or shape hypotheses call analyze_gradients or check_shapes.\n"
            "4. Propose the single smallest fix for the top root cause and explain its expected effect. After "
            "the rerun, call compare_runs(before_path, after_path) to verify (pathology gone, >10% better, "
            "stable for 100+ steps).\n"
            "5. Record it with write_journal and lock it in with create_smoke_test.\n"
            "Quote evidence (step, value, line) for every claim; say what you do not know."
        )

    @mcp.prompt(name="root_cause_analysis", title="Root-cause analysis of a hard failure",
                description="The research-debug workflow: evidence, triangulation table, fix-and-verify, write-up.")
    def root_cause_analysis(problem: str, log_path: str | None = None, code_path: str | None = None) -> str:
        sources = []
        if log_path:
            sources.append(f"the log {log_path} (tail_log, read_metrics, classify_failure)")
        if code_path:
            sources.append(f"the code {code_path} (classify_failure with code_path)")
        where = "; ".join(sources) if sources else "the run's logs and code (ask for their paths if unknown)"
        return (
            f"Problem: {problem}\n\n"
            "Run a root-cause analysis following guide://research-debug.\n"
            f"Phase 1, evidence: gather it from {where}, and search the literature for the failure as others "
            "describe it. Record each finding with its source.\n"
            "Phase 2, triangulation: build the table | Finding | Code location | Both sources agree? | Impact | "
            "Priority | and rank CRITICAL > HIGH > MEDIUM > LOW.\n"
            "Phase 3, fix and verify: fix one priority at a time, smallest change first; after each rerun, "
            "compare_runs on the before/after logs (no collapse for 100+ steps or 10x the old failure step; "
            "metrics in healthy ranges; check the early warnings: entropy vs 0.9*log(vocab), zero advantages "
            "with reward > 0.5, norms at their clamp, KL stuck at zero).\n"
            "Phase 4, write-up: a root-cause document (problem, ranked root causes with evidence, fixes, "
            "before/after metrics, lessons), a write_journal entry, and a create_smoke_test regression test."
        )


def _inside_roots(env: ToolEnv, raw: str):
    try:
        return env.roots.resolve(raw)
    except PathOutsideRoots as exc:
        raise ResourceError(f"{exc} Local files are read with the tail_log tool, within the same roots.") from None
    except ValueError as exc:
        raise ResourceError(str(exc)) from None


def _read_small(path) -> str | None:
    """The whole text of a file up to JOURNAL_RESOURCE_MAX_BYTES (None when larger), read safely."""
    try:
        with safe_fs.open_read(path) as fh:
            if os.fstat(fh.fileno()).st_size > JOURNAL_RESOURCE_MAX_BYTES:
                return None
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        raise ResourceError(f"{path}: {exc.strerror or exc}") from None


def _tail_text(path) -> str:
    from ml_debug_mcp.core.logs.tail import tail_file

    result = tail_file(path, lines=FILE_RESOURCE_MAX_LINES, analyze=False)
    if result.status == "binary":
        raise ResourceError(f"{path} is a binary file, not a text log.")
    if result.status in ("unreadable", "missing", "directory"):  # e.g. a link swapped in after the check
        raise ResourceError(f"{path}: {'; '.join(result.warnings)}")
    text = "\n".join(line.text for line in result.lines)
    if result.partial_line is not None:
        text += "\n" + result.partial_line.text
    return text
