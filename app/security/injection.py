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
        r"\b(system|hidden|initial|original|developer)\s+(prompt|instructions?|message)",
        re.I,
    ),
    "fake_chat_markup": re.compile(
        r"(<\|?(im_start|im_end|system|endoftext)\|?>|\[/?(INST|SYS)\]|<<SYS>>|^\s*(system|assistant)\s*:)",
        re.I | re.M,
    ),
    "jailbreak_persona": re.compile(
        r"\b((?-i:DAN)|do anything now|developer mode|jailbr(oken|eak)|"
        r"no (ethical|moral) (guidelines|limits)|without (any )?restrictions)\b",
        re.I,
    ),
    "exfiltration_link": re.compile(r"!\[[^\]]*\]\(\s*https?://[^)\s]+\?[^)\s]*=", re.I),
}


def detect_injection(text: str) -> list[str]:
    """Names of the injection patterns in ``text``, in a stable order."""
    flags: list[str] = []
    if _INVISIBLE.search(text) or _TAG_CHARACTERS.search(text) or _BIDI_CONTROLS.search(text):
        flags.append("hidden_characters")
    normalised = unicodedata.normalize("NFKC", _TAG_CHARACTERS.sub("", _INVISIBLE.sub("", text)))
    flags.extend(name for name, pattern in _PATTERNS.items() if pattern.search(normalised))
    return flags
