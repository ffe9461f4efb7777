"""What the Dockerfile and .dockerignore promise, checked without Docker (``make test-image`` builds
and runs the images where Docker can run): the slim image is the default target, the real-world
defaults stay in place, nothing secret is baked in and the build context is only the service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def stages() -> list[tuple[str, str]]:
    """(name, body) of each stage, in order."""
    parts = re.split(r"^FROM \S+ AS (\S+)\n", DOCKERFILE, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_the_slim_image_is_the_default_target_and_local_adds_torch() -> None:
    names = [name for name, _ in stages()]
    assert names[-1] == "runtime" and "local" in names
    bodies = dict(stages())
    assert "COPY --from=venv " in bodies["runtime"] and "venv-local" not in bodies["runtime"]
    assert "COPY --from=venv-local " in bodies["local"]
    assert "-r requirements-local.txt" in bodies["venv-local"]


def test_ocr_has_an_image_target_of_its_own_the_one_ocr_unavailable_names() -> None:
    from app.documents.parsing import OCR_IMAGE_TARGET

    bodies = dict(stages())
    assert "COPY --from=venv-ocr " in bodies[OCR_IMAGE_TARGET]
    assert "-r requirements-ocr.txt" in bodies["venv-ocr"] and "pip_check.py" in bodies["venv-ocr"]
    assert "requirements-ocr" not in bodies["runtime"] + bodies["venv"] + bodies["deps"]


def test_real_world_defaults_stay_and_the_test_only_overrides_build_arguments() -> None:
    # the real default, pinned by digest so a rebuild gets the same base (issue 25)
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", DOCKERFILE, re.M)
    assert re.search(r"^ARG EXTRA_CA_CERTS=\"\"$", DOCKERFILE, re.M)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in DOCKERFILE
    assert "--require-hashes" in DOCKERFILE and "pip check" in DOCKERFILE


def test_no_secret_is_baked_into_the_image() -> None:
    assignments = re.findall(r"\b([A-Z_]+)=(\S*)", DOCKERFILE)
    secret_like = [
        name for name, value in assignments if re.search(r"(_KEY|SECRET|PASSWORD)$", name) and value
    ]
    assert not secret_like
    assert "dev-api-key" not in DOCKERFILE and "DEBUG" not in DOCKERFILE


@pytest.mark.parametrize(
    "path",
    [
        *(".git/HEAD", ".venv/bin/python", ".data/postgres/PG_VERSION", ".env", "tests/conftest.py"),
        *("logs/a.log", "htmlcov/index.html", "app/__pycache__/main.cpython-311.pyc", "demo/app.py"),
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path",
    [
        *("app/main.py", "alembic/env.py", "alembic.ini", "pyproject.toml", "requirements.txt"),
        *("requirements-local.txt", "requirements-pip.txt", "scripts/slim_venv.sh"),
        *("requirements-ocr.txt", "scripts/pip_check.py"),
    ],
)
def test_the_build_context_has_what_the_dockerfile_copies(path: str) -> None:
    assert not dockerignored(path)
    assert (ROOT / path).exists()
