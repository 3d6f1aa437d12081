"""What every benchmark script shares: percentiles and the table it prints."""

from __future__ import annotations

from collections.abc import Sequence


def pct(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of xs; NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
