"""Peak-memory helpers shared by the benchmark scripts (Linux /proc; NaN elsewhere)."""

from __future__ import annotations

import re
from pathlib import Path


def vm_hwm_mb() -> float:
    """Peak resident set of this process since the last :func:`reset_hwm`, in MiB."""
    try:
        m = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
        return int(m.group(1)) / 1024 if m else float("nan")
    except OSError:
        return float("nan")


def reset_hwm() -> None:
    """Reset the peak resident set counter (VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
