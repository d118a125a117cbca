"""Disk usage of the partition holding a store directory, measured as RocketMQ does."""

from __future__ import annotations

import math
import os


def partition_used_ratio(path: str) -> float:
    """Fraction (0.0..1.0) of the partition holding `path` in use, as RocketMQ's
    UtilAll.getDiskPartitionSpaceUsedPercent computes it: ceil(used * 100 / (used +
    usable)) / 100 with used = total - free and usable = what an unprivileged user may
    still allocate (so root's reserved blocks count as used). -1.0 when it cannot be
    measured (RocketMQ then cleans, to be safe)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return -1.0
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    usable = st.f_bavail * st.f_frsize
    if used + usable <= 0:
        return -1.0
    return math.ceil(used * 100 / (used + usable)) / 100
