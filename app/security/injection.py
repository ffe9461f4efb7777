"""Prompt-injection heuristics for questions and retrieved passages.

``detect_injection(text)`` returns the names of the patterns found (empty when none). It flags;
it never blocks or rewrites: callers log the flags and keep retrieved text as quoted data.
"""

from __future__ import annotations

import re
import unicodedata

_INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")
_TAG_CHARACTERS = re.compile("[\U000e0000-\U000e007f]")
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")

# Every pattern runs in linear time on any input (questions and passages are client text): a
# quantifier is bounded, or possessive where what follows cannot match what it consumed. A line
# start takes only same-line blanks (``^\s*`` let each of 64 K newlines rescan all the others).
_PATTERNS: dict[str, re.Pattern[str]] = {
    "ignore_instructions": re.compile(
        r"\b(ignore|disregard|forget|override|bypass|skip)\b[^.\n]{0,40}?\b(previous|prior|above|earlier|"
        r"preceding|all|any|your|the|system)\b[^.\n]{0,30}?\b(instructions?|prompts?|rules|directions|"
        r"guidelines|context|messages?)\b",
        re.I,
    ),
    "role_override": re.compile(
        r"\b(you are now|from now on,? you|act as|pretend (to be|you are)|roleplay as|"
        r"you must now|new instructions?:|your new (role|task|instructions?))",
        re.I,
    ),
    "system_prompt_exfiltration": re.compile(
        r"\b(reveal|show|print|repeat|output|display|tell me|leak|dump)\b[^.\n]{0,40}?"
        r"\b(system|hidden|initial|original|developer)\s++(prompt|instructions?|message)",
        re.I,
    ),
    "fake_chat_markup": re.compile(
        r"(<\|?(im_start|im_end|system|endoftext)\|?>|\[/?(INST|SYS)\]|<<SYS>>|^[^\S\n]*+(system|assistant)\s*+:)",
        re.I | re.M,
    ),
    "jailbreak_persona": re.compile(
        r"\b((?-i:DAN)|do anything now|developer mode|jailbr(oken|eak)|"
        r"no (ethical|moral) (guidelines|limits)|without (any )?restrictions)\b",
        re.I,
    ),
}

# A markdown image whose URL carries a query parameter (an exfiltration beacon): what
# ``!\[[^\]]*\]\(\s*https?://[^)\s]+\?[^)\s]*=`` finds, found in linear time by
# ``_has_exfiltration_link`` (the regex itself rescans every later URL from every ``![``).
_LINK_TARGET = re.compile(r"\]\(\s*+https?://", re.I)
_URL_RUN = re.compile(r"[^)\s]++")


def _has_exfiltration_link(text: str) -> bool:
    """Whether some ``](`` + blanks + ``http(s)://`` has a ``![`` before it with no ``]`` between,
    and after it a run of URL characters (no ``)``, no whitespace) with a ``?`` past the run's
    first character and an ``=`` after that ``?``."""
    if "![" not in text:
        return False
    runs = _URL_RUN.finditer(text)
    run: re.Match[str] | None = None
    last_query = -1  # in ``run``: the last "?" before its last "=", -1 if none
    for target in _LINK_TARGET.finditer(text):
        url = target.end()
        while run is None or run.end() <= url:
            run = next(runs, None)
            if run is None:
                return False
            last_equals = text.rfind("=", run.start(), run.end())
            last_query = text.rfind("?", run.start(), last_equals) if last_equals != -1 else -1
        # URLs that start inside one run all end with it: this one has "?…=" if it starts
        # before the run's last such "?".
        if run.start() <= url < last_query:
            bracket = target.start()
            if text.find("![", text.rfind("]", 0, bracket) + 1, bracket) != -1:
                return True
    return False


def detect_injection(text: str) -> list[str]:
    """Names of the injection patterns in ``text``, in a stable order."""
    flags: list[str] = []
    if _INVISIBLE.search(text) or _TAG_CHARACTERS.search(text) or _BIDI_CONTROLS.search(text):
        flags.append("hidden_characters")
    normalised = unicodedata.normalize("NFKC", _TAG_CHARACTERS.sub("", _INVISIBLE.sub("", text)))
    flags.extend(name for name, pattern in _PATTERNS.items() if pattern.search(normalised))
    if _has_exfiltration_link(normalised):
        flags.append("exfiltration_link")
    return flags
