"""Streamlit demo: chat with your documents through the running API.

Run with `make demo` (starts on :8501) while `make run` serves the API. The dev API key that
`make run` created is read from DATA_DIR/dev-api-key unless you paste another one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import streamlit as st
from render import safe_markdown  # demo/render.py: streamlit puts the script folder on sys.path

API_URL = os.environ.get("API_URL", "http://127.0.0.1:8000")
KEY_FILE = Path(os.environ.get("DATA_DIR", ".data")) / "dev-api-key"


def default_key() -> str:
    try:
        return KEY_FILE.read_text().strip()
    except OSError:
        return ""


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    event = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def show_sources(sources: list[dict[str, Any]]) -> None:
    if not sources:
        return
    with st.expander(f"Sources ({len(sources)})"):
        for source in sources:
            mark = "**cited**" if source.get("cited") else ""
            st.markdown(
                f"\\[{source['number']}\\] **{safe_markdown(source['title'])}**, page {source['page']} "
                f"(v{source['version']}, score {source['score']:.3f}) {mark}\n\n> "
                + safe_markdown(source["snippet"])
            )


def main() -> None:
    st.set_page_config(page_title="RAG chat demo", page_icon="💬")
    st.title("Chat with your documents")
    with st.sidebar:
        api_url = st.text_input("API URL", API_URL)
        api_key = st.text_input("API key", default_key(), type="password")
        headers = {"X-API-Key": api_key}
        st.subheader("Upload a document")
        upload = st.file_uploader("PDF, DOCX, TXT, MD", type=["pdf", "docx", "txt", "md", "html"])
        tags = st.text_input("Tags (comma-separated)")
        if upload is not None and st.button("Upload"):
            response = httpx.post(
                f"{api_url}/api/v1/docs",
                files={"file": (upload.name, upload.getvalue())},
                data={"title": upload.name, "tags": tags},
                headers=headers,
                timeout=60,
            )
            if response.status_code == 202:
                st.success(f"Queued: job {response.json()['job_id']}")
            else:
                st.error(response.json().get("detail", response.text))
        if st.button("New conversation"):
            st.session_state.pop("session_id", None)
            st.session_state.pop("history", None)

    session_id = st.session_state.setdefault("session_id", str(uuid.uuid4()))
    history: list[dict[str, Any]] = st.session_state.setdefault("history", [])
    for turn in history:
        with st.chat_message(turn["role"]):
            st.markdown(safe_markdown(turn["content"]))
            show_sources(turn.get("sources", []))

    question = st.chat_input("Ask about your documents")
    if not question:
        return
    history.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(safe_markdown(question))
    with st.chat_message("assistant"):
        placeholder = st.empty()
        text, sources, meta = "", [], ""
        with httpx.stream(
            "POST",
            f"{api_url}/api/v1/chat",
            json={"question": question, "session_id": session_id, "stream": True},
            headers=headers,
            timeout=120,
        ) as response:
            if response.status_code != 200:
                response.read()
                st.error(response.json().get("detail", response.text))
                return
            for event, data in sse_events(response):
                if event == "sources":
                    sources = data["sources"]
                elif event == "delta":
                    text += data["text"]
                    placeholder.markdown(safe_markdown(text) + "▌")
                elif event == "done":
                    meta = f"{data['provider']} · {data['latency_ms']:.0f} ms" + (
                        " · cached" if data["cached"] else ""
                    )
                elif event == "error":
                    meta = f"stopped: {data['message']} (trace {data['trace_id']})"
        placeholder.markdown(safe_markdown(text))
        st.caption(meta)
        show_sources(sources)
    history.append({"role": "assistant", "content": text, "sources": sources})


main()
