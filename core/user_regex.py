"""Regular expressions written by the caller, compiled for RE2: matching time is linear in the input.

Python's `re` backtracks, and a pattern such as `^(a+)+$` can run for hours on one line while
holding the GIL, which freezes every other request of the server. RE2 cannot: it has no
backreferences or lookaround, and says so when a pattern uses them.
"""

from __future__ import annotations

from typing import Any

MAX_PATTERN_CHARS = 1000


def compile_user_regex(pattern: str, what: str) -> Any:
    """A compiled pattern with `.search(str)`, or ValueError naming `what` and how to fix it."""
    import re2

    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"{what} is {len(pattern)} characters; keep it under {MAX_PATTERN_CHARS}.")
    options = re2.Options()
    options.log_errors = False  # RE2 would print parse errors to stderr; the caller gets them instead
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"{what} {pattern!r} is not a valid regular expression ({reason}). Escape special characters such as "
            "( [ + * ? with a backslash, or search for a plain word; backreferences and lookaround are not "
            "supported (patterns run on RE2, in linear time)."
        ) from None
