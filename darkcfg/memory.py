"""How much memory the system can still give, for refusing work that cannot fit before it
starts (a network's arrays, a decoded image) instead of failing deep inside NumPy or
being killed by the kernel."""
from __future__ import annotations

import os


def available_memory() -> int | None:
    """Bytes the system can still give (Linux MemAvailable; else free pages; else None)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None
