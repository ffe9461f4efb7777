"""A second process reading router cooldowns from the same Redis through the same code.

Runs as ``python -m tests.support.peer_process``; one JSON request per stdin line
(``{"redis_url", "prefix", "providers"}``), one JSON answer per stdout line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from redis.asyncio import Redis

from app.llm.factory import cooldown_store
from app.settings import Settings


async def read_states(request: dict[str, Any]) -> dict[str, Any]:
    settings = Settings(
        redis_url=request["redis_url"],
        redis_key_prefix=request["prefix"],
        _env_file=None,  # type: ignore[call-arg]
    )
    redis = Redis.from_url(request["redis_url"])
    try:
        states = await cooldown_store(settings, redis).states(request["providers"])
    finally:
        await redis.aclose()
    return {"pid": os.getpid(), "states": {name: asdict(state) for name, state in states.items()}}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(asyncio.run(read_states(json.loads(line)))), flush=True)


if __name__ == "__main__":
    main()
