#!/usr/bin/env python3
"""`make wheel-check`: the wheel and the sdist in DIST carry what an installed whispdiar
reads at run time (the model manifest, the CAM++ export module), and the wheel no
development files. Exit 1 with one line per problem.

    python scripts/check_dist.py dist
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

NEEDED = ("whispdiar/manifest.json", "whispdiar/diarization/export_campplus.py", "whispdiar/__main__.py",
          "whispdiar/asr/convert.py")
NOT_IN_WHEEL = ("tests/", "scripts/", "docs/")


def main(dist: Path) -> int:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    problems = [f"no {kind} in {dist}" for kind, found in (("wheel", wheels), ("sdist", sdists)) if not found]
    for whl in wheels:
        names = set(zipfile.ZipFile(whl).namelist())
        problems += [f"{whl.name}: lacks {n}" for n in NEEDED if n not in names]
        problems += [f"{whl.name}: carries {n}" for n in names if n.startswith(NOT_IN_WHEEL)]
        if not any(n.endswith("entry_points.txt") for n in names):
            problems.append(f"{whl.name}: no entry_points.txt (no `whispdiar` command)")
    for sd in sdists:
        with tarfile.open(sd) as t:
            names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        problems += [f"{sd.name}: lacks {n}" for n in NEEDED if n not in names]
    for p in problems:
        print(f"check_dist: {p}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {', '.join(p.name for p in wheels + sdists)} carry {', '.join(NEEDED)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
