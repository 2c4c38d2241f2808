#!/usr/bin/env python3
"""`make test-latest`: which installed distributions differ from constraints.txt's pins
(so a failure of the newest versions names its suspects).

    python scripts/lock_diff.py constraints.txt   # run with the venv's python
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: Path) -> int:
    pinned: dict[str, set[str]] = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pinned.setdefault(canon(m[1]), set()).add(m[2])
    rows = []
    for d in distributions():
        name = canon(d.metadata["Name"])
        if name in pinned and d.version not in pinned[name]:
            rows.append(f"  {name}: {' / '.join(sorted(pinned[name]))} -> {d.version}")
    print(f"versions that differ from {lock}:" if rows else f"every pinned distribution is as in {lock}")
    print("\n".join(sorted(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "constraints.txt")))
