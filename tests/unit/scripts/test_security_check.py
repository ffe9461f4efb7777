from __future__ import annotations

import pytest

from scripts import security_check

pytestmark = pytest.mark.unit


def test_unreachable_pypi_fails_the_audit_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SECURITY_CHECK_PROBE_URL", "http://127.0.0.1:9/pypi/alembic/1.0/json")
    assert security_check.audit() == 2
    message = capsys.readouterr().err
    assert "pip-audit needs PyPI's per-release JSON API" in message
    assert "unreachable" in message


def test_probe_targets_a_pinned_release_of_the_lock_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SECURITY_CHECK_PROBE_URL", raising=False)
    url = security_check.probe_url()
    assert url.startswith("https://pypi.org/pypi/") and url.endswith("/json")
    name, version = url.removeprefix("https://pypi.org/pypi/").removesuffix("/json").split("/")
    assert f"{name}=={version}" in (security_check.ROOT / "requirements.txt").read_text()
