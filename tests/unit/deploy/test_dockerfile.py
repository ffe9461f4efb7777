"""The Dockerfile, checked against the code it packages: every copied path exists, and the image
keeps its promises (multi-stage, non-root, health check). docker-compose.yml and the Kubernetes
manifests are checked beside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_dockerfile_is_multi_stage_non_root_with_a_health_check_and_existing_paths() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    for line in dockerfile.splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue  # copies between stages name paths inside the image
        *sources, _destination = [part for part in line.split()[1:] if not part.startswith("--")]
        for path in sources:
            assert (ROOT / path).exists(), f"COPY {path}: missing"
    assert "--require-hashes" in dockerfile


def test_every_base_image_is_pinned_by_digest() -> None:
    """A tag moves (every Debian point release); a digest names the same bytes on every build."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert bases
    for base in bases:
        if base in stages:
            continue  # a previous stage of this file
        image = defaults.get(base[2:-1], "") if base.startswith("${") else base
        assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", image), f"FROM {base} ({image}): no digest"
