"""A scripted agent that walks the decision tree by reading the tools' own answers.

It knows no tool sequence: it calls classify_failure on a bare log, then makes each of the top
hypothesis' `next_steps` in order, filling only the arguments listed under `missing` from what the
scenario knows (the fixed re-run's log, the model factory, the script). A step it cannot fill is
skipped and recorded, so a gap in the product's next steps shows up as a skipped call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp import Client


@dataclass
class Call:
    tool: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None
    text: str
    is_error: bool = False


@dataclass
class Run:
    calls: list[Call] = field(default_factory=list)
    skipped: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def diagnosis(self) -> dict[str, Any]:
        return self.calls[0].result or {}

    def made(self, tool: str) -> list[Call]:
        return [c for c in self.calls if c.tool == tool and not c.is_error]


async def call(client: Client, run: Run, tool: str, arguments: dict[str, Any]) -> Call:
    result = await client.call_tool(tool, arguments)
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    made = Call(tool, arguments, result.structured_content, text, bool(result.is_error))
    run.calls.append(made)
    return made


async def investigate(client: Client, log_path: str, known: dict[str, str], smoke_variants: dict[str, str]) -> Run:
    """From a bare log to the journal and regression test.

    `known` maps argument names to what the agent knows (after_path, entrypoint, code_path).
    `smoke_variants` maps a label to a factory: create_smoke_test is run once per factory (run=true),
    so the test can be seen to fail on the bug and pass on the fix.
    """
    run = Run()
    first = await call(client, run, "classify_failure", {"log_path": log_path})
    hypotheses = (first.result or {}).get("hypotheses", [])
    if not hypotheses or hypotheses[0]["failure"] == "healthy":
        return run
    for step in hypotheses[0]["next_steps"]:
        tool, arguments, missing = step["tool"], dict(step["arguments"]), step["missing"]
        if tool == "classify_failure" and not missing:
            continue  # the same call again would say the same
        if any(name not in known for name in missing):
            run.skipped.append((tool, missing))
            continue
        arguments.update({name: known[name] for name in missing})
        if tool == "create_smoke_test":
            for label, factory in smoke_variants.items():
                path = arguments["path"].replace(".py", f"_{label}.py")
                await call(client, run, tool, {**arguments, "path": path, "entrypoint": factory, "run": True,
                                                "overwrite": True})
            continue
        await call(client, run, tool, arguments)
    return run
