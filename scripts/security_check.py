"""`make security-check`: audit the locked dependencies against PyPI's vulnerability data with
pip-audit and write a CycloneDX SBOM of the runtime lock file to ``sbom.json``.

Exit codes: 0 clean, 1 known vulnerabilities, 2 PyPI unreachable (no advisory data, so no
verdict: a silent pass would be a lie).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCK_FILES = ("requirements.txt", "requirements-dev.txt")
SBOM = ROOT / "sbom.json"
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", re.M)


def probe_url() -> str:
    """PyPI's per-release JSON (what pip-audit reads) for the first pin of the runtime lock."""
    override = os.environ.get("SECURITY_CHECK_PROBE_URL")
    if override:
        return override
    pin = _PIN.search((ROOT / "requirements.txt").read_text())
    name, version = pin.groups() if pin else ("pip", "24.0")
    return f"https://pypi.org/pypi/{name}/{version}/json"


def pypi_reachable(url: str) -> str | None:
    """None when PyPI's JSON API answers, else the reason it does not."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def write_sbom() -> bool:
    """The SBOM needs no network: it is built from the hashed runtime lock file."""
    result = subprocess.run(
        [
            str(BIN / "cyclonedx-py"),
            "requirements",
            str(ROOT / "requirements.txt"),
            "--pyproject",
            str(ROOT / "pyproject.toml"),
            "--output-format",
            "JSON",
            "--output-reproducible",
            "-o",
            str(SBOM),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(f"error: the CycloneDX SBOM could not be generated:\n{result.stderr}", file=sys.stderr)
        return False
    print(f"CycloneDX SBOM written to {SBOM.relative_to(ROOT)}", file=sys.stderr)
    return True


def audit() -> int:
    url = probe_url()
    reason = pypi_reachable(url)
    if reason is not None:
        print(
            f"error: pip-audit needs PyPI's per-release JSON API ({url}), which carries the "
            f"vulnerability data it checks against; it is unreachable: {reason}",
            file=sys.stderr,
        )
        return 2
    requirements = [arg for lock in LOCK_FILES for arg in ("-r", str(ROOT / lock))]
    result = subprocess.run(
        [
            str(BIN / "pip-audit"),
            *requirements,
            "--require-hashes",
            "--disable-pip",  # versions come from the hashed lock files: nothing is installed
            "--vulnerability-service",
            "pypi",
            "--progress-spinner",
            "off",
            "--strict",  # a dependency PyPI cannot tell us about fails the audit, never skips it
        ],
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        print("error: pip-audit reported vulnerable or unauditable dependencies (above)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    sbom_ok = write_sbom()
    status = audit()
    return status or (0 if sbom_ok else 1)


if __name__ == "__main__":
    sys.exit(main())
