"""Streamlit demo: chat with your documents through the running API.

Run with `make demo` (http://localhost:8501) while `make run` serves the API.

Keys stay on the server that runs this script: the API URL is ``API_URL`` (a visitor cannot change
where keys are sent), and the dev API key that `make run` created (DATA_DIR/dev-api-key) is used
when the key field is empty, read here and never put in a widget the browser can read back, and
only while Streamlit listens on a loopback address (`make demo` binds 127.0.0.1; DEMO_HOST=0.0.0.0
shares the page, and then every visitor pastes a key of their own).

Everything the page shows comes from the API: who you are (`/api/v1/me`), what it accepts
(`/api/v1/limits`: upload size and formats, slider bounds, provider-key headers), which models it
can use (`/api/v1/providers`) and how much budget is left (`/api/v1/rate-limit/status`). Text from
documents and models goes through `safe_markdown`: no raw HTML, no remote images.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
from api_client import Api, ApiError  # demo/api_client.py: streamlit puts the script folder on sys.path
from render import highlighted_passage, relevance_label, safe_markdown
from usage import fetch_budget_lines

API_URL = os.environ.get("API_URL", "http://127.0.0.1:8000").strip()
KEY_FILE = Path(os.environ.get("DATA_DIR", ".data")) / "dev-api-key"
PROVIDERS_TTL_S = 30.0  # how long the model list's availability marks are reused
JOB_POLL_S = 0.5
JOB_WAIT_S = 600.0
CITATION = re.compile(r"\[(\d{1,3})\]")
LOW_BUDGET = 0.2  # warn when less than this share of a budget remains
CHAT_VIEW, DOCUMENTS_VIEW = ":material/chat: Chat", ":material/description: Documents"

MODELS: dict[str, str | None] = {
    "Auto (fallback chain)": None,
    "Gemini": "gemini",
    "Llama 3 (Groq)": "groq",
    "ChatGPT (OpenAI)": "openai",
    "Local (GPT4All)": "local",
}
PROVIDER_LABELS = {"gemini": "Gemini", "groq": "Groq", "openai": "OpenAI"}
BUDGET_LABELS = {
    "chat": "Chat requests",
    "uploads": "Uploads",
    "ip": "Requests from your address",
}


def served_on_loopback_only() -> bool:
    """Streamlit listens on all interfaces unless ``server.address`` names one; only a loopback
    address keeps the page to people who could read the key file anyway."""
    address = str(st.get_option("server.address") or "").strip("[]")
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def dev_key() -> str:
    """The key `make run` wrote, for a demo only this machine can open; "" otherwise."""
    if not served_on_loopback_only():
        return ""
    try:
        return KEY_FILE.read_text().strip()
    except OSError:
        return ""


# --- connection ----------------------------------------------------------------------------------


@dataclass
class Connection:
    marker: tuple[str, str]  # the URL and a digest of the key it was made with (never the key)
    me: dict[str, Any]
    limits: dict[str, Any]
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    providers_at: float = 0.0

    @property
    def can_edit(self) -> bool:
        return self.me["role"] in ("editor", "admin")


def connect(api: Api, url: str, key: str) -> Connection:
    """Who we are and what the API accepts, asked once per URL and key; the providers' state
    again every ``PROVIDERS_TTL_S``."""
    marker = (url, hashlib.sha256(key.encode()).hexdigest())
    conn: Connection | None = st.session_state.get("connection")
    if conn is None or conn.marker != marker:
        conn = Connection(marker, me=api.get("/api/v1/me"), limits=api.get("/api/v1/limits"))
        st.session_state["connection"] = conn
    if time.monotonic() - conn.providers_at > PROVIDERS_TTL_S or not conn.providers:
        listed = api.get("/api/v1/providers")["providers"]
        conn.providers = {p["name"]: p for p in listed}
        conn.providers_at = time.monotonic()
    return conn


def forget_connection() -> None:
    st.session_state.pop("connection", None)


def sidebar_connection() -> tuple[str, str]:
    """The API URL is the server's setting, not a field: keys go to ``API_URL`` and nowhere else.
    An empty key field means the dev key, which stays on the server."""
    st.header("Connection")
    st.caption(f"API: `{API_URL}` (API_URL where the demo runs)")  # the operator's, not a visitor's
    st.text_input(
        "API key",
        key="api_key",
        type="password",
        help=f"Empty: the dev key in {KEY_FILE} (`make run` writes it), used on the server and never "
        "shown here, and only while the demo listens on this machine alone.",
    )
    st.button("Check connection", on_click=forget_connection)
    typed = st.session_state["api_key"].strip()
    if typed:
        return API_URL, typed
    fallback = dev_key()
    if fallback:
        st.caption(f"Using the dev key from `{safe_markdown(str(KEY_FILE))}`.")
    return API_URL, fallback


def connection_failed(exc: ApiError) -> None:
    if exc.status == 401:
        st.sidebar.error(f"The API refused this key: {safe_markdown(exc.detail)} ({exc.code}).")
        st.info(
            "Paste a valid API key in the sidebar: the dev key is in `.data/dev-api-key` after "
            "`make run`; `python -m app keys create --tenant dev --role editor` makes another."
        )
    elif exc.status == 0:
        st.sidebar.error(f"Cannot reach the API at {safe_markdown(API_URL)}.")
        st.info("Start it with `make run` in another terminal, then press **Check connection**.")
    else:
        show_api_error(exc, where=st.sidebar)


# --- errors and rate limits --------------------------------------------------------------------


def note_rate_limited(exc: ApiError) -> None:
    st.session_state["retry_at"] = time.time() + (exc.retry_after_s or 60)


def show_api_error(exc: ApiError, where: Any = st) -> None:
    """A refused request in words, never a stack trace; a 429 starts the Retry-After countdown."""
    if exc.status == 429:
        note_rate_limited(exc)
        where.warning(f"Rate limit reached ({exc.code}): {safe_markdown(exc.detail)}")
    else:
        where.error(f"{safe_markdown(exc.detail)} ({exc.code})")


@st.fragment(run_every=1.0)
def retry_countdown() -> None:
    left = math.ceil(st.session_state.get("retry_at", 0) - time.time())
    if left > 0:
        st.warning(
            f"Rate limit reached: you can send again in **{left} s** (Retry-After).",
            icon=":material/hourglass_top:",
        )
    else:
        st.session_state.pop("retry_at", None)
        st.rerun()


def waiting_for_retry() -> bool:
    return st.session_state.get("retry_at", 0) > time.time()


def sidebar_rate_limits(api: Api) -> None:
    st.header("Rate limits")
    try:
        status = api.get("/api/v1/rate-limit/status")
    except ApiError as exc:
        show_api_error(exc, where=st.sidebar)
        return
    if not status["storage_available"]:
        st.caption("The limiter's storage is down: budgets are not being counted right now.")
    for budget in status["budgets"]:
        if budget["budget"] not in ("chat", "uploads", "ip"):
            continue
        label = BUDGET_LABELS[budget["budget"]]
        limit, remaining, reset = budget["limit"], budget["remaining"], budget["reset_after_s"]
        if remaining is None:
            st.caption(f"{label}: {limit} per {budget['window'].split(' per ')[-1]}, none used yet")
            continue
        resets = f" · resets in {reset} s" if reset else ""
        st.progress(remaining / limit if limit else 0.0, text=f"{label}: {remaining}/{limit} left{resets}")
        if remaining < LOW_BUDGET * limit:
            st.warning(f"Only {remaining} of {limit} {label.lower()} left{resets}.")


def sidebar_usage(api: Api) -> None:
    """The caller's token and money budgets: what is left of each and when it resets."""
    st.header("Usage and budgets")
    try:
        lines = fetch_budget_lines(api)
    except ApiError as exc:
        show_api_error(exc, where=st.sidebar)
        return
    if not lines:
        st.caption("No token or money budget applies to this key.")
    for line in lines:
        st.progress(line.share_left, text=line.text)
        if line.low:
            st.warning(f"Almost used up: {line.text}.")


# --- model and parameters ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChatOptions:
    model: str | None
    temperature: float
    max_tokens: int
    key_headers: dict[str, str]  # the caller's own provider keys, as request headers


def own_keys(conn: Connection) -> dict[str, str]:
    """The provider keys pasted in this browser session (session state only), by provider."""
    keys = {}
    for provider in conn.limits["provider_key_headers"]:
        value = st.session_state.get(f"own_key_{provider}", "").strip()
        if value:
            keys[provider] = value
    return keys


def forget_own_keys() -> None:
    for name in list(st.session_state):
        if str(name).startswith("own_key_"):
            st.session_state[name] = ""


def model_state(conn: Connection, pin: str | None, keys: dict[str, str]) -> tuple[bool, str]:
    """Whether the server can answer with ``pin`` now, and the mark shown next to its name."""
    if pin is None:
        return True, ""
    if pin in keys:
        return True, " · your key"
    status = conn.providers.get(pin)
    if status is None:
        return False, " · not offered by this server"
    if not status["configured"]:
        return False, " · unavailable"
    if status["state"] == "cooling_down":
        return True, " · cooling down"
    return True, ""


def sidebar_model(conn: Connection) -> ChatOptions:
    st.header("Model")
    keys = own_keys(conn)
    name = st.selectbox(
        "Model",
        list(MODELS),
        key="model",
        format_func=lambda label: label + model_state(conn, MODELS[label], keys)[1],
    )
    pin = MODELS[name]
    usable, _ = model_state(conn, pin, keys)
    if not usable and pin is not None:
        reason = (conn.providers.get(pin) or {}).get("detail") or "the server does not route to it"
        st.warning(
            f"{name} is unavailable here ({safe_markdown(reason)}). Pick another model or use your own key."
        )
    bounds = conn.limits["chat"]
    temperature = bounds["temperature"]
    tokens = bounds["max_tokens"]
    st.slider(
        "Temperature",
        min_value=float(temperature["minimum"]),
        max_value=float(temperature["maximum"]),
        value=min(max(0.2, float(temperature["minimum"])), float(temperature["maximum"])),
        step=0.05,
        key="temperature",
    )
    st.slider(
        "Max tokens",
        min_value=int(tokens["minimum"]),
        max_value=int(tokens["maximum"]),
        value=int(tokens["default"] or tokens["maximum"]),
        key="max_tokens",
    )
    with st.expander("Your own provider keys", expanded=bool(keys)):
        st.caption(
            "Kept in this browser session only and sent with your questions. The API uses a key "
            "for your request alone: never stored, logged or cached."
        )
        for provider in conn.limits["provider_key_headers"]:
            st.text_input(
                f"{PROVIDER_LABELS.get(provider, provider)} API key",
                key=f"own_key_{provider}",
                type="password",
            )
        if not conn.limits["provider_key_headers"]:
            st.caption("This server takes no provider keys.")
        st.button("Forget my keys", on_click=forget_own_keys)
    headers = {conn.limits["provider_key_headers"][p]: k for p, k in own_keys(conn).items()}
    return ChatOptions(pin, st.session_state["temperature"], st.session_state["max_tokens"], headers)


# --- chat --------------------------------------------------------------------------------------


def start_conversation() -> str:
    session_id = str(uuid.uuid4())
    st.query_params["session"] = session_id
    st.session_state["session_id"] = session_id
    st.session_state["turns"] = []
    return session_id


def current_conversation(api: Api) -> str:
    """The session id in the URL (so a reload keeps the conversation), its history loaded from
    the API the first time this browser session sees it."""
    session_id = st.query_params.get("session")
    if not session_id:
        return start_conversation()
    if st.session_state.get("session_id") != session_id:
        st.session_state["session_id"] = session_id
        try:
            stored = api.get(f"/api/v1/sessions/{session_id}/messages")["messages"]
        except ApiError as exc:
            if exc.status == 422:  # not a session id the API accepts: start a fresh one
                return start_conversation()
            stored = []
            if exc.status != 404:
                show_api_error(exc)
        st.session_state["turns"] = [turn_of(message) for message in stored]
    return session_id


def turn_of(message: dict[str, Any]) -> dict[str, Any]:
    turn: dict[str, Any] = {"role": message["role"], "content": message["content"]}
    if message["role"] == "assistant":
        # Stored as first streamed (before the text): mark what the answer cites, as `done` did.
        cited = {int(number) for number in CITATION.findall(message["content"])}
        turn["sources"] = [{**s, "cited": s["number"] in cited} for s in message.get("sources") or []]
        provider = message.get("provider")
        turn["caption"] = " · ".join(x for x in (provider, message.get("model")) if x and x != "none")
        if message.get("status") not in (None, "ok"):
            turn["error"] = {"code": message["status"], "message": "this answer did not finish"}
    return turn


def new_conversation(api: Api) -> None:
    try:
        api.delete(f"/api/v1/sessions/{st.session_state['session_id']}")
    except ApiError as exc:
        if exc.status != 404:
            show_api_error(exc)
            return
    start_conversation()


def show_sources(sources: list[dict[str, Any]]) -> None:
    if not sources:
        return
    cited = sum(1 for source in sources if source.get("cited"))
    with st.expander(f"Sources ({len(sources)}, {cited} cited)"):
        for source in sources:
            tags = ", ".join(safe_markdown(tag) for tag in source.get("tags") or []) or "no tags"
            mark = ":green[:material/check_circle: **cited**]" if source.get("cited") else "not cited"
            recognised = " (OCR)" if source.get("ocr") else ""  # text recognised in a scan or image
            page = f"page {source['page']}{recognised}"
            st.markdown(
                f"**[{source['number']}] {safe_markdown(source['title'])}** · {page} · "
                f"version {source['version']} · tags: {tags} · {relevance_label(source)} · {mark}"
            )
            st.caption(highlighted_passage(source))


def show_answer_details(turn: dict[str, Any]) -> None:
    error = turn.get("error")
    if error:
        st.error(f"The answer stopped: {safe_markdown(error['message'])} ({error['code']})")
    if turn.get("caption"):
        st.caption(turn["caption"])
    show_sources(turn.get("sources") or [])


def answer_caption(done: dict[str, Any], own_key: bool) -> str:
    parts = [done["provider"], done["model"], f"{done['latency_ms']:.0f} ms"]
    parts.append("cache hit" if done["cached"] else "cache miss")
    if own_key and done["provider"] != "none":
        parts.append("your key")
    if done["degraded"]:
        parts.append("degraded")
    return " · ".join(parts)


def ask(api: Api, session_id: str, question: str, options: ChatOptions) -> None:
    turns: list[dict[str, Any]] = st.session_state["turns"]
    turns.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(safe_markdown(question))
    body: dict[str, Any] = {
        "question": question,
        "session_id": session_id,
        "temperature": options.temperature,
        "max_tokens": options.max_tokens,
    }
    if options.model:
        body["model"] = options.model
    turn: dict[str, Any] = {"role": "assistant", "content": "", "sources": []}
    with st.chat_message("assistant"):
        # A placeholder rewritten with the whole text so far, not st.write_stream: that renders the
        # raw concatenation, and an image link split across two deltas would get through.
        placeholder = st.empty()
        placeholder.markdown("_Thinking…_")
        try:
            with api.chat_stream(body, options.key_headers) as events:
                for event, data in events:
                    if event == "sources":
                        turn["sources"] = data["sources"]
                    elif event == "delta":
                        turn["content"] += data["text"]
                        placeholder.markdown(safe_markdown(turn["content"]) + " ▌")
                    elif event == "done":
                        cited = set(data["cited"])
                        turn["sources"] = [{**s, "cited": s["number"] in cited} for s in turn["sources"]]
                        turn["caption"] = answer_caption(data, bool(options.key_headers))
                    elif event == "error":
                        turn["error"] = {"code": data["code"], "message": data["message"]}
        except ApiError as exc:
            if exc.status == 429:
                note_rate_limited(exc)
            turn["error"] = {"code": exc.code, "message": exc.detail}
        if turn["content"]:
            placeholder.markdown(safe_markdown(turn["content"]))
        else:
            placeholder.empty()
        show_answer_details(turn)
    turns.append(turn)
    if waiting_for_retry():
        st.rerun()  # the countdown under the conversation, and no sending until it ends


def chat_view(api: Api, options: ChatOptions) -> None:
    session_id = current_conversation(api)
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.caption(f"Conversation `{session_id}` (in the URL: reload and it is still here)")
    if right.button("New conversation", key="new_conversation", use_container_width=True):
        new_conversation(api)
        st.rerun()
    for turn in st.session_state["turns"]:
        with st.chat_message(turn["role"]):
            st.markdown(safe_markdown(turn["content"]))
            if turn["role"] == "assistant":
                show_answer_details(turn)
    if waiting_for_retry():
        retry_countdown()
    question = st.chat_input("Ask about your documents", disabled=waiting_for_retry())
    if question:
        ask(api, session_id, question, options)


# --- documents ---------------------------------------------------------------------------------


def too_large(upload: Any, limit_mb: int) -> bool:
    if upload.size <= limit_mb * 1024 * 1024:
        return False
    st.error(
        f"{safe_markdown(upload.name)} is {upload.size / 1024 / 1024:.1f} MB; this server accepts up "
        f"to {limit_mb} MB (MAX_UPLOAD_MB). Nothing was sent."
    )
    return True


def follow_job(api: Api, status_url: str) -> None:
    """A progress bar driven by the ingestion job, until it succeeds or fails."""
    bar = st.progress(0, text="Queued · 0 %")
    deadline = time.monotonic() + JOB_WAIT_S
    while time.monotonic() < deadline:
        job = api.get(status_url)
        if job["status"] == "succeeded":
            bar.progress(100, text="Ingested · 100 %")
            if job["stage"] == "fetching":  # a URL job that found the content it already had
                st.info(f"Unchanged since the last fetch: version {job['version']} stays current.")
            else:
                st.success(f"Ready: version {job['version']} is searchable.")
            return
        if job["status"] == "failed":
            st.error(
                f"Ingestion failed: {safe_markdown(job['error'] or 'unknown error')} ({job['error_code']})"
            )
            return
        percent = max(0, min(100, int(job["progress"])))
        stage = (job["stage"] or job["status"]).capitalize()
        if job.get("stage") == "ocr" and job.get("stage_pages"):
            stage = f"OCR page {min(job['stage_page'] + 1, job['stage_pages'])} of {job['stage_pages']}"
        bar.progress(percent, text=f"{stage} · {percent} %")
        time.sleep(JOB_POLL_S)
    st.info("Still ingesting; its status is in the list below.")


def process(api: Api, send: Any, upload: Any, limit_mb: int) -> None:
    if too_large(upload, limit_mb):
        return
    try:
        accepted = send()
    except ApiError as exc:
        show_api_error(exc)
        return
    if accepted["status"] == "unchanged":
        st.info(f"Identical to version {accepted['version']}: nothing new was stored.")
        return
    try:
        follow_job(api, accepted["status_url"])
    except ApiError as exc:
        show_api_error(exc)


def add_document(api: Api, conn: Connection) -> None:
    limits = conn.limits
    limit_mb = int(limits["max_upload_mb"])
    formats = ", ".join(
        dict.fromkeys(FORMAT_NAMES.get(ext, ext.upper()) for ext in limits["upload_extensions"])
    )
    with st.container(border=True):
        st.subheader("Add a document")
        upload = st.file_uploader(
            f"{formats} · up to {limit_mb} MB",
            type=limits["upload_extensions"],
            max_upload_size=limit_mb,
            key="new_document",
        )
        title = st.text_input("Title", key="new_title", placeholder=upload.name if upload else "")
        tags = st.text_input("Tags", key="new_tags", placeholder="comma-separated, e.g. policy, hr")
        groups = st.text_input("Groups", key="new_groups", placeholder="who may see it; empty: everyone")
        if st.button("Process", type="primary", disabled=upload is None, key="process_new") and upload:
            fields = {"title": title.strip() or upload.name}
            if tags.strip():
                fields["tags"] = tags
            if groups.strip():
                fields["access_groups"] = groups
            process(
                api,
                lambda: api.post(
                    "/api/v1/docs", files={"file": (upload.name, upload.getvalue())}, data=fields
                ),
                upload,
                limit_mb,
            )


def add_url(api: Api) -> None:
    """The other way in: a web page, PDF, text or Markdown file the server fetches itself."""
    with st.container(border=True):
        st.subheader("Add a URL")
        url = st.text_input("URL", key="new_url", placeholder="https://example.org/handbook.html")
        title = st.text_input("Title", key="new_url_title", placeholder="the URL's host and path")
        tags = st.text_input("Tags", key="new_url_tags", placeholder="comma-separated, e.g. policy, hr")
        if st.button("Fetch", type="primary", disabled=not url.strip(), key="fetch_new"):
            body: dict[str, Any] = {"url": url.strip()}
            if title.strip():
                body["title"] = title.strip()
            if tags.strip():
                body["tags"] = [tag.strip() for tag in tags.split(",") if tag.strip()]
            follow_request(api, lambda: api.post("/api/v1/docs", json=body))


def follow_request(api: Api, send: Any) -> None:
    """Send, then follow the job it queued with the progress bar (a URL has no file to check)."""
    try:
        accepted = send()
        follow_job(api, accepted["status_url"])
    except ApiError as exc:
        show_api_error(exc)


FORMAT_NAMES = {
    **{"md": "Markdown", "markdown": "Markdown", "mdown": "Markdown", "htm": "HTML", "html": "HTML"},
    **{"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF", "webp": "WebP"},  # images: OCR
}
STATUS_COLORS = {"succeeded": "green", "failed": "red", "queued": "gray", "running": "blue"}


def document_row(api: Api, conn: Connection, document: dict[str, Any]) -> None:
    document_id = document["id"]
    deleted = document["deleted_at"] is not None
    try:
        detail = api.get(f"/api/v1/docs/{document_id}", include_deleted=str(deleted).lower())
    except ApiError as exc:
        show_api_error(exc)
        return
    latest = detail.get("latest") or {}
    status = "deleted" if deleted else latest.get("status", "no version")
    with st.container(border=True):
        info, actions = st.columns([3, 2])
        tags = " ".join(f"`{safe_markdown(tag)}`" for tag in document["tags"]) or "no tags"
        info.markdown(f"**{safe_markdown(document['title'])}**")
        badge = f":{STATUS_COLORS.get(status, 'gray')}-badge[{status}]"
        version = document["current_version"] or "none yet"
        info.markdown(f"{badge} · version {version} · {detail['chunk_count']} chunks · {tags}")
        info.caption(access_caption(document.get("access") or {}))
        if conn.can_edit:
            if deleted:
                if actions.button("Restore", key=f"restore_{document_id}"):
                    run_action(lambda: api.post(f"/api/v1/docs/{document_id}/restore"), "Restored")
            else:
                if actions.button("Delete", key=f"delete_{document_id}"):
                    run_action(lambda: api.delete(f"/api/v1/docs/{document_id}"), "Deleted (restorable)")
                with actions.popover("New version"):
                    new_version(api, conn, document_id)
                with actions.popover("Groups"):
                    edit_groups(api, document)
                if detail.get("source_url") and actions.button("Refresh", key=f"refresh_{document_id}"):
                    follow_request(api, lambda: api.post(f"/api/v1/docs/{document_id}/refresh"))
        if st.toggle("Versions", key=f"versions_{document_id}"):
            try:
                versions = api.get(f"/api/v1/docs/{document_id}/versions")
            except ApiError as exc:
                show_api_error(exc)
                return
            st.dataframe(
                [
                    {
                        "version": v["version"],
                        "current": v["is_current"],
                        "status": v["status"],
                        "file": v["filename"],
                        "pages": v["page_count"],
                        "chunks": v["chunk_count"],
                        "uploaded": v["uploaded_at"][:19].replace("T", " "),
                    }
                    for v in versions
                ],
                hide_index=True,
            )


def access_caption(access: dict[str, Any]) -> str:
    groups, principals = access.get("groups") or [], access.get("principals") or []
    if not groups and not principals:
        return "Visible to: everyone in the tenant"
    names = [f"group {safe_markdown(g)}" for g in groups] + [safe_markdown(p) for p in principals]
    return "Visible to: " + ", ".join(names) + " (and admins)"


def edit_groups(api: Api, document: dict[str, Any]) -> None:
    """Replace the groups of the document's access list (its principals are kept)."""
    document_id = document["id"]
    access = document.get("access") or {}
    groups = st.text_input(
        "Groups (comma-separated; empty: everyone)",
        value=", ".join(access.get("groups") or []),
        key=f"groups_{document_id}",
    )
    if st.button("Save groups", key=f"save_groups_{document_id}"):
        body = {
            "access": {
                "groups": [g.strip() for g in groups.split(",") if g.strip()],
                "principals": access.get("principals") or [],
            }
        }
        run_action(lambda: api.patch(f"/api/v1/docs/{document_id}", json=body), "Groups saved")


def new_version(api: Api, conn: Connection, document_id: str) -> None:
    limit_mb = int(conn.limits["max_upload_mb"])
    upload = st.file_uploader(
        f"New version · up to {limit_mb} MB",
        type=conn.limits["upload_extensions"],
        max_upload_size=limit_mb,
        key=f"version_file_{document_id}",
    )
    if st.button("Process", key=f"process_{document_id}", disabled=upload is None) and upload:
        process(
            api,
            lambda: api.put(f"/api/v1/docs/{document_id}", files={"file": (upload.name, upload.getvalue())}),
            upload,
            limit_mb,
        )


def run_action(action: Any, done: str) -> None:
    try:
        action()
    except ApiError as exc:
        show_api_error(exc)
        return
    st.toast(done)
    st.rerun()


def documents_view(api: Api, conn: Connection) -> None:
    if waiting_for_retry():
        retry_countdown()
    if conn.can_edit:
        add_document(api, conn)
        add_url(api)
    else:
        st.info("This key has the reader role: uploading, deleting and restoring need an editor key.")
    st.subheader("Documents")
    include_deleted = conn.can_edit and st.toggle("Show deleted documents", key="show_deleted")
    listing = api.get("/api/v1/docs", include_deleted=str(include_deleted).lower(), limit=20)
    if not listing["items"]:
        st.caption("No documents yet.")
    for document in listing["items"]:
        document_row(api, conn, document)
    if listing["total"] > len(listing["items"]):
        st.caption(f"The {len(listing['items'])} most recently changed of {listing['total']}.")


# --- the page ----------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="Chat with your documents", page_icon=":material/forum:")
    st.session_state.setdefault("api_key", "")
    st.title(":material/forum: Chat with your documents")
    with st.sidebar:
        url, key = sidebar_connection()
    with Api(url, key) as api:
        try:
            conn = connect(api, url, key)
        except ApiError as exc:
            connection_failed(exc)
            return
        me = conn.me
        st.sidebar.success(f"Connected as `{me['principal_id']}` · {me['role']}", icon=":material/key:")
        with st.sidebar:
            options = sidebar_model(conn)
            budgets = st.container()  # filled last, so it counts this run's own requests
        view = st.radio("View", [CHAT_VIEW, DOCUMENTS_VIEW], horizontal=True, label_visibility="collapsed")
        try:
            if view == DOCUMENTS_VIEW:
                documents_view(api, conn)
            else:
                chat_view(api, options)
        except ApiError as exc:
            show_api_error(exc)
        with budgets:
            sidebar_rate_limits(api)
            sidebar_usage(api)


main()
