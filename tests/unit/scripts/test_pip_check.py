"""scripts/pip_check.py: `pip check` that accepts the headless OpenCV build for the opencv-python
RapidOCR declares, and nothing else."""

from __future__ import annotations

import pytest

from scripts.pip_check import _satisfied_by_substitute, main

pytestmark = pytest.mark.unit


def test_the_installed_locks_pass_with_the_headless_opencv_standing_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main() == 0
    assert "opencv-python by opencv-python-headless" in capsys.readouterr().out


def test_only_the_listed_substitute_at_an_allowed_version_is_accepted() -> None:
    assert _satisfied_by_substitute("rapidocr-onnxruntime", "opencv-python")
    assert not _satisfied_by_substitute("rapidocr-onnxruntime", "pyclipper")  # no substitute listed
    assert not _satisfied_by_substitute("pypdf", "opencv-python")  # pypdf does not require it
