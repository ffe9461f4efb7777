from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from app.observability.context import (
    bind_ids,
    bind_job_context,
    current_request_id,
    current_trace_id,
    new_trace_id,
)
from app.observability.logging import configure_logging, log_file_path, rotating_file_handler
from app.settings import Settings

pytestmark = [pytest.mark.unit, pytest.mark.metrics]

API_KEY = "rk_0123456789ab_Zm9vYmFyYmF6cXV4LXNlY3JldC1wYXJ0LTEyMzQ1Njc4"


def make_settings(**overrides: object) -> Settings:
    options: dict[str, object] = {"debug": True, "log_json": True, **overrides}
    return Settings(_env_file=None, **options)  # type: ignore[call-arg, arg-type]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging(make_settings())  # closes the file handlers a test opened


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("restore_logging")
def test_file_is_named_by_date_and_pid_and_gets_masked_json_from_every_logger(tmp_path: Path) -> None:
    configure_logging(make_settings(log_to_file=tmp_path, log_json=False))
    request_id, trace_id = "req-file-1", new_trace_id()
    bind_ids(request_id, trace_id)
    structlog.get_logger("app.test").info("login", user="carol@example.com", password="hunter2", key=API_KEY)
    logging.getLogger("thirdparty.client").warning("retrying with Authorization: Bearer abcdefghijklmnop")
    logging.getLogger("uvicorn.error").info("uvicorn says hi")

    path = log_file_path(tmp_path)
    assert path.name == f"ragchat-{datetime.now(UTC):%Y%m%d}-{os.getpid()}.log"
    lines = json_lines(path.read_text())  # JSON in the file even when the console is not
    assert [line["event"] for line in lines] == [
        "login",
        "retrying with Authorization: Bearer [REDACTED]",
        "uvicorn says hi",
    ]
    assert all(line["request_id"] == request_id and line["trace_id"] == trace_id for line in lines)
    assert lines[0]["user"] == "[EMAIL]"
    assert lines[0]["password"] == "[REDACTED]"
    assert lines[0]["key"] == "rk_0123456789ab_[REDACTED]"
    assert "hunter2" not in path.read_text()
    assert API_KEY not in path.read_text()


@pytest.mark.usefixtures("restore_logging")
def test_stderr_gets_json_lines_when_log_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(make_settings())
    structlog.get_logger("app.test").warning("hello", email="dave@example.org")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == "hello"
    assert line["email"] == "[EMAIL]"
    assert line["level"] == "warning"
    assert "timestamp" in line


@pytest.mark.usefixtures("restore_logging")
def test_log_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(make_settings(log_level="WARNING"))
    structlog.get_logger("app.test").info("quiet")
    structlog.get_logger("app.test").error("loud")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["loud"]


def test_rotated_files_are_gzip_compressed(tmp_path: Path) -> None:
    handler = rotating_file_handler(make_settings(log_to_file=tmp_path, log_file_backups=2))
    handler.maxBytes = 200  # the setting's unit is MB; shrink it to force rotations quickly
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for number in range(30):
            handler.emit(
                logging.LogRecord(
                    "t", logging.INFO, __file__, 1, f"line {number:03d} " + "x" * 40, None, None
                )
            )
    finally:
        handler.close()
    base = log_file_path(tmp_path)
    rotated = sorted(tmp_path.glob(base.name + ".*"))
    assert [p.name for p in rotated] == [base.name + ".1.gz", base.name + ".2.gz"]  # backups capped
    newest_rotated = gzip.decompress(rotated[0].read_bytes()).decode()
    assert newest_rotated.startswith("line ")
    assert base.read_text().splitlines()[-1].startswith("line 029")


def test_job_context_binds_stored_ids_and_restores_the_previous_ones() -> None:
    bind_ids("outer-request", "a" * 32)
    stored_trace = new_trace_id()
    with bind_job_context("job-request", stored_trace) as job:
        assert (current_request_id(), current_trace_id()) == ("job-request", stored_trace)
        assert job.trace_id == stored_trace
    assert (current_request_id(), current_trace_id()) == ("outer-request", "a" * 32)


def test_job_context_without_stored_ids_makes_fresh_valid_ones() -> None:
    job = bind_job_context(None, "not-a-trace-id")
    try:
        assert job.request_id.startswith("job-")
        assert len(job.trace_id) == 32 and job.trace_id != "not-a-trace-id"
        assert current_trace_id() == job.trace_id
    finally:
        job.__exit__(None, None, None)
