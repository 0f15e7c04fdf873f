"""The roots sandbox: every path a tool touches must resolve inside a configured root.

Resolution follows symlinks (`Path.resolve(strict=False)`), so neither `..` nor a link that
points outside a root can escape. Pure and MCP-free: the server builds one `Roots` from its
configuration, and the CLI can use the same object. Resolving is the check; opening what it
returned without following a link swapped in meanwhile is `safe_fs`'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class PathOutsideRoots(PermissionError):
    """A path resolved outside every configured root."""

    def __init__(self, requested: str, resolved: Path, roots: tuple[Path, ...]) -> None:
        self.requested = requested
        self.resolved = resolved
        self.roots = roots
        listed = ", ".join(str(r) for r in roots)
        super().__init__(
            f"'{requested}' resolves to {resolved}, which is outside the allowed roots ({listed}). "
            f"Use a path inside one of them, or restart the server with --root <dir> to allow another folder."
        )


@dataclass(frozen=True)
class Roots:
    """An immutable set of resolved root directories."""

    paths: tuple[Path, ...]

    @classmethod
    def from_strings(cls, roots: list[str] | tuple[str, ...]) -> "Roots":
        resolved: list[Path] = []
        for raw in roots:
            p = Path(os.path.expanduser(raw)).resolve()
            if p not in resolved:
                resolved.append(p)
        return cls(tuple(resolved))

    @property
    def primary(self) -> Path:
        return self.paths[0]

    def contains(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.paths)

    def resolve(self, requested: str | os.PathLike[str]) -> Path:
        """Resolve a user path (relative paths are taken from the first root) inside the roots.

        Raises PathOutsideRoots when the resolved path, symlinks followed, leaves every root.
        """
        raw = os.fspath(requested)
        if "\x00" in raw:
            raise ValueError("The path contains a NUL byte; pass a plain file path.")
        candidate = Path(os.path.expanduser(raw))
        if not candidate.is_absolute():
            candidate = self.primary / candidate
        resolved = candidate.resolve(strict=False)
        if not self.contains(resolved):
            raise PathOutsideRoots(raw, resolved, self.paths)
        return resolved
