"""What the service wrote to its log files (``LOG_TO_FILE``), one JSON object a line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_lines(directory: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(directory.glob("ragchat-*.log")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines
