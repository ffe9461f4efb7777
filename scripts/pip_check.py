"""`pip check`, accepting exactly one kind of report: a requirement on a distribution that is not
installed because a listed substitute providing the same modules is, at a version the requirement
allows. Everything else pip check reports fails, as before.

The substitution: rapidocr-onnxruntime (requirements-ocr.txt) declares ``opencv-python``, whose
wheel links the system's libGL; ``opencv-python-headless`` is the same ``cv2`` module without the
GUI libraries, and pip check matches distribution names, not modules.

    python scripts/pip_check.py          (make's install step and the Dockerfile's `ocr` image)

Standalone (the standard library and pip's vendored ``packaging``), so the images run it too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

SUBSTITUTES = {"opencv-python": "opencv-python-headless"}
_NOT_INSTALLED = re.compile(r"^(?P<dist>\S+) \S+ requires (?P<needed>\S+), which is not installed\.$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _satisfied_by_substitute(dist: str, needed: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a venv without packaging: pip's own copy
        from pip._vendor.packaging.requirements import Requirement

    substitute = SUBSTITUTES.get(_canonical(needed))
    if substitute is None:
        return False
    try:
        version = metadata.version(substitute)
    except metadata.PackageNotFoundError:
        return False
    for line in metadata.requires(dist) or ():
        requirement = Requirement(line)
        if _canonical(requirement.name) == _canonical(needed):
            return requirement.specifier.contains(version, prereleases=True)
    return False


def main() -> int:
    run = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    problems = []
    for line in run.stdout.splitlines():
        match = _NOT_INSTALLED.match(line.strip())
        if match and _satisfied_by_substitute(match["dist"], match["needed"]):
            continue
        if line.strip() and line.strip() != "No broken requirements found.":
            problems.append(line)
    if problems or (run.returncode != 0 and not run.stdout.strip()):
        print("\n".join(problems) or run.stderr, file=sys.stderr)
        return 1
    substituted = ", ".join(f"{name} by {substitute}" for name, substitute in SUBSTITUTES.items())
    print(f"No broken requirements found ({substituted}, which provides the same modules).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
