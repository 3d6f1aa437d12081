"""Tiny formatting helpers for rejection sentences (no dependency on the rest of corral)."""


def gib(n: int) -> str:
    """Bytes as a short size: whole GiB when large, else MiB."""
    if n >= 1024**3:
        v = n / 1024**3
        return f"{v:.0f} GiB" if abs(v - round(v)) < 0.05 else f"{v:.1f} GiB"
    v = n / 1024**2
    return f"{v:.0f} MiB"


def cores(millis: int) -> str:
    return f"{millis / 1000:g} cpu"
