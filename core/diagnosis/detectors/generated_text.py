"""Generated output as evidence: the samples people paste when a generator or policy collapses.

Mode collapse is most often shown, not logged: the same sentence five times, one token repeated
down a line, empty generations, or an embedding matrix whose rows are all the same. This detector
reads the text itself. It takes only lines that look like model output (words, not log lines,
tracebacks or metric pairs), so a healthy log's repeated warnings never count, and it reports the
repetition rate it measured as the evidence.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

from ml_debug_mcp.core.diagnosis.hypotheses import Evidence, Hypothesis
from ml_debug_mcp.core.logs.normalize import normalize_text

MAX_LINES = 4000  # the end of a long paste is enough
MIN_SAMPLES = 3
_SAMPLE_PREFIX = re.compile(r"^\s*(?:\d{1,4}\s*[,.:)\]-]\s*|(?:[A-Za-z][\w ]{0,24}|Q|A)\s*[:>]\s+|[-*>]+\s+)")
_LOG_MARKERS = re.compile(r"Traceback|File \"|Error|Warning|warn|http|\[INFO|INFO|DEBUG|it/s|s/it|%\||==|\|\s|"
                          r"\b(?:loss|epoch|step|iter|lr|acc)\b\s*[:=]|\b(?:step|epoch|iter(?:ation)?) \d", re.I)
_GENERATION_CONTEXT = re.compile(r"predict|generat|output|response|answer|sample|decod|transcri|caption|"
                                 r"^\s*(?:Q|A|User|Assistant|Bot|Human)\s*:|^\s*>", re.I | re.M)
_CODE_LIKE = re.compile(r"\w[/\\_]\w|\w\.\w|=|#\d|\w\(|::|->|\[\d|\{")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|<\w+>")
_EMPTY_OUTPUT = re.compile(r"""^\s*(?:[\w ]{0,30}[:=]\s*)?\[*\s*(?:''|""|\[\s*\])\s*\]*\s*,?\s*$"""
                           r"|=>\s*,\s*gt\s*:|\bpred(?:iction|icted)?s?\s*[:=]\s*(?:''|\"\"|,|$)", re.I)
_NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_NUMBER_ROW = re.compile(rf"\[\s*({_NUMBER}(?:\s*,?\s+{_NUMBER}|\s*,\s*{_NUMBER})+)\s*\]?\s*,?\s*\)*\s*$")
_QUOTED = re.compile("[ub]?'([^']*)'|[ub]?\"([^\"]*)\"")


def _samples(lines: list[str], raw: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of the lines that read as generated output rather than log text (a line a
    logger printed is log text even once its prefix is gone)."""
    out = []
    for number, (line, written) in enumerate(zip(lines, raw), 1):
        body = _SAMPLE_PREFIX.sub("", line, count=1).strip()
        if len(body) < 2 or _LOG_MARKERS.search(line) or _LOG_MARKERS.search(written):
            continue
        if _CODE_LIKE.search(body):
            continue  # paths, identifiers, assignments and call syntax are program text, not output
        words = _WORD.findall(body)
        letters = sum(ch.isalpha() or ch == "'" for ch in body)
        digits = sum(ch.isdigit() for ch in body)
        if len(words) >= 3 and letters >= 0.7 * len(body.replace(" ", "")) and digits <= 0.1 * len(body):
            out.append((number, " ".join(body.lower().split())))
    return out


def _near(a: str, b: str) -> bool:
    return a == b or (min(len(a), len(b)) >= 12 and SequenceMatcher(None, a, b).ratio() >= 0.9)


def _words_only(line: str) -> str | None:
    """A one-word output line (a recognised word, a transcription): letters only, not a log keyword."""
    body = line.strip()
    if 2 <= len(body) <= 40 and body.isalpha() and not _LOG_MARKERS.search(body):
        return body.lower()
    return None


def _repeated_samples(samples: list[tuple[int, str]]) -> Evidence | None:
    texts = [t for _, t in samples]
    best, best_members = "", 0
    for candidate in dict.fromkeys(texts):
        members = sum(_near(candidate, t) for t in texts)
        if members > best_members:
            best, best_members = candidate, members
    share = best_members / len(texts)
    if best_members < MIN_SAMPLES or share < 0.35:
        return None
    first = next(n for n, t in samples if _near(best, t))
    return Evidence(kind="output", text=(f"{best_members} of {len(texts)} generated samples are the same text (or within "
                                       f"10% of it): '{best[:120]}': repetition rate {share:.0%}"),
                    line_no=first, value=round(share, 3), rule="generated_text.repeated_samples")


def _repeated_tokens(samples: list[tuple[int, str]]) -> Evidence | None:
    for number, text in samples:
        tokens = [token.strip(".,!?;:\"'") or token for token in text.split()]
        if len(tokens) < 5:
            continue
        run, longest = 1, 1
        for a, b in zip(tokens, tokens[1:]):
            run = run + 1 if a == b else 1
            longest = max(longest, run)
        token, count = Counter(tokens).most_common(1)[0]
        share = count / len(tokens)
        if longest >= 4 or (share >= 0.6 and count >= 5):
            return Evidence(kind="output", text=(f"one token repeats down the output: '{token}' is {count} of "
                                               f"{len(tokens)} tokens (runs of {longest}) in '{text[:100]}'"),
                            line_no=number, value=round(share, 3), rule="generated_text.repeated_token")
    return None


def _identical_quoted(lines: list[str]) -> Evidence | None:
    """One printed list of outputs whose items are all the same string: ['tee e', 'tee e', 'tee e']."""
    for number, line in enumerate(lines, 1):
        items = [a or b for a, b in _QUOTED.findall(line)]
        if len(items) >= MIN_SAMPLES and len(set(items)) == 1 and items[0].strip():
            return Evidence(kind="output", text=f"{len(items)} outputs in one list are all '{items[0][:60]}'",
                            line_no=number, value=1.0, rule="generated_text.identical_list")
    return None


def _empty_outputs(lines: list[str]) -> Evidence | None:
    empty = [n for n, line in enumerate(lines, 1) if _EMPTY_OUTPUT.match(line)]
    context = _GENERATION_CONTEXT.search("\n".join(lines))
    if not empty or context is None:
        return None
    return Evidence(kind="output", text=f"{len(empty)} generated output(s) are empty strings", line_no=empty[0],
                    value=float(len(empty)), rule="generated_text.empty_outputs")


def _identical_rows(lines: list[str]) -> tuple[str, Evidence] | None:
    """Runs of identical printed tensor rows: identical embeddings (floats) or identical predictions (ints)."""
    run_start, run, previous = 0, 0, None
    best: tuple[int, int, str] | None = None
    for number, line in enumerate(lines, 1):
        m = _NUMBER_ROW.search(line)
        row = " ".join(m.group(1).replace(",", " ").split()) if m else None
        if row is not None and row == previous:
            run += 1
        else:
            run_start, run, previous = number, 1, row
        if row is not None and run >= MIN_SAMPLES and (best is None or run > best[1]):
            best = (run_start, run, row)
    if best is None:
        return None
    start, count, row = best
    floats = "." in row or "e" in row
    failure = "rank_collapse" if floats else "mode_collapse"
    what = "representations (embeddings) are identical: they collapsed to one point" if floats else \
        "predictions are identical whatever the input"
    return failure, Evidence(kind="output", text=f"{count} printed rows in a row are the same [{row[:80]}]: the {what}",
                             line_no=start, value=float(count), rule="generated_text.identical_rows")


def detect_generated_text(text: str) -> list[Hypothesis]:
    """Mode/rank-collapse hypotheses from pasted samples and printed outputs; [] when none are there."""
    if not text or not text.strip():
        return []
    raw = text.split("\n")[-MAX_LINES:]
    lines = normalize_text("\n".join(raw)).split("\n")
    found: dict[str, tuple[float, list[Evidence]]] = {}

    def add(failure: str, confidence: float, item: Evidence) -> None:
        conf, items = found.get(failure, (0.0, []))
        found[failure] = (max(conf, confidence), items + [item])

    samples = _samples(lines, raw)
    samples += [(n, w) for n, line in enumerate(lines, 1) if (w := _words_only(line)) is not None]
    samples.sort()
    if len(samples) >= MIN_SAMPLES:
        repeated = _repeated_samples(samples)
        if repeated is not None:
            confidence = min(0.85, 0.55 + 0.4 * (repeated.value - 0.5) + 0.03 * len(samples))
            if _GENERATION_CONTEXT.search(text) is None:
                confidence = min(confidence, 0.5)  # repeated prose, with nothing saying it was generated
            add("mode_collapse", confidence, repeated)
    tokens = _repeated_tokens(samples)
    if tokens is not None:
        add("mode_collapse", 0.7, tokens)
    same = _identical_quoted(lines)
    if same is not None:
        add("mode_collapse", 0.65, same)
    empty = _empty_outputs(lines)
    if empty is not None:
        add("mode_collapse", 0.6, empty)
    rows = _identical_rows(lines)
    if rows is not None:
        add(rows[0], min(0.8, 0.5 + 0.05 * rows[1].value), rows[1])
    return [Hypothesis(failure=failure, confidence=round(conf, 3), evidence=items)
            for failure, (conf, items) in sorted(found.items(), key=lambda kv: -kv[1][0])]
