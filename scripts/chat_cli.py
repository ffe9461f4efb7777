"""`make chat Q="..."`: ask the running service and print the answer with its sources."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("question")
    parser.add_argument("--url", default=os.environ.get("BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("API_KEY"))
    parser.add_argument("--session", default=None, help="session id to continue a conversation")
    args = parser.parse_args(argv)
    key = args.key
    if not key:
        key_file = Path(os.environ.get("DATA_DIR", ".data")) / "dev-api-key"
        key = key_file.read_text().strip() if key_file.exists() else ""
    if not key:
        print("error: no API key: pass --key, set API_KEY, or start `make run` once", file=sys.stderr)
        return 2
    body = {"question": args.question}
    if args.session:
        body["session_id"] = args.session
    try:
        response = httpx.post(f"{args.url}/api/v1/chat", json=body, headers={"X-API-Key": key}, timeout=120)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url} ({exc}); is `make run` running?", file=sys.stderr)
        return 2
    data = response.json()
    if response.status_code != 200:
        print(f"error {response.status_code} [{data.get('code')}]: {data.get('detail')}", file=sys.stderr)
        return 1
    print(data["answer"])
    print()
    for source in data["sources"]:
        mark = "*" if source["cited"] else " "
        print(
            f" {mark}[{source['number']}] {source['title']} p.{source['page']}"
            f" (v{source['version']}) score={source['score']:.3f}"
        )
    flags = " cached" if data["cached"] else ""
    flags += " degraded" if data["degraded"] else ""
    print(f"\n{data['provider']}/{data['model']} {data['latency_ms']:.0f} ms{flags} trace={data['trace_id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
