"""Regression guard against catastrophic backtracking in the regexes that see client text.

Each function runs on 64 KB inputs built from its own patterns' worst cases (long runs of what a
pattern repeats, with no match at the end). The old patterns took seconds to hours on these (the
e-mail mask ~30 s, ``![](http://a?`` repeated far longer). No wall-clock bound: each function runs
on 16 KB and on 64 KB, and 4 times the input may cost about 4 times the CPU time, not 16
(``tests.support.complexity``), which holds on a busy machine too.

The rewritten patterns must also behave as the old ones did: on short random strings (where the
old patterns are quick) both give the same results.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable

import pytest

from app.cache.answers import normalise_question
from app.observability.masking import mask_text, mask_value
from app.security.injection import detect_injection
from tests.support.complexity import assert_linear

pytestmark = pytest.mark.unit

SIZE = 64 * 1024
Build = Callable[[int], str]


def _fill(unit: str, head: str = "", tail: str = "") -> Build:
    return lambda size: head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


def _newline_blank(size: int) -> str:
    return "a" + "\n " * ((size - 2) // 2) + "b"


MASK_INPUTS: dict[str, Build] = {
    "email-local-dots": _fill("a."),
    "email-local-dashes": _fill("a-"),
    "email-domain": _fill("a.", head="a@"),
    "email-ats": _fill("a@"),
    "jwt": _fill("eyJ-"),
    "url-scheme": _fill("a.", tail="://x"),
    "url-scheme-then-user": lambda size: _fill("a+")(size)[: size // 2] + "://" + "u" * (size // 2),
    "url-empty-user": _fill("p", head="x://:"),
    "bearer": _fill(" ", head="Bearer", tail="!"),
    "key-value": _fill(" ", head="token", tail="x"),
    "key-value-repeated": _fill("password: "),
    "provider-keys": lambda size: _fill("sk-")(size) + _fill("gsk_")(size) + _fill("AIza")(size),
    "api-keys": _fill("rk_"),
}

QUESTION_INPUTS: dict[str, Build] = {
    "question-marks": _fill("?", tail="a"),
    "newline-blank": _newline_blank,
    "blank-question-marks": _fill(" ?", tail="a"),
    "dots": _fill(".", tail="a"),
}

INJECTION_INPUTS: dict[str, Build] = {
    "newlines": _fill("\n", tail="a"),
    "newline-blank": _newline_blank,
    "image-opens": _fill("!["),
    "image-links": _fill("![](http://"),
    "image-links-query": _fill("![](http://a?"),
    "image-url-query": _fill("?", head="![x](https://a"),
    "system-blanks": _fill(" ", head="show system", tail="x"),
    "ignore-all": _fill("skip all "),
    "ignore-the": _fill("ignore the "),
    "reveal-system": _fill("show system "),
    "markup": lambda size: _fill("<|")(size) + _fill("[/")(size),
    "system-colon": _fill("system "),
}


def _assert_linear(function: Callable[[str], object], build: Build) -> None:
    """The function on 16 KB and on 64 KB of the hostile input: about 4 times the CPU time."""
    assert_linear(lambda size: function(build(size)), SIZE // 4)


@pytest.mark.parametrize("build", MASK_INPUTS.values(), ids=MASK_INPUTS.keys())
def test_masking_is_linear(build: Build) -> None:
    _assert_linear(mask_text, build)


def test_masking_an_access_log_event_with_a_hostile_path_is_linear() -> None:
    _assert_linear(
        lambda path: mask_value({"event": "request", "path": path}), lambda size: "/" + _fill("a.")(size)
    )


@pytest.mark.parametrize("build", QUESTION_INPUTS.values(), ids=QUESTION_INPUTS.keys())
def test_question_normalisation_is_linear(build: Build) -> None:
    _assert_linear(normalise_question, build)


@pytest.mark.parametrize("build", INJECTION_INPUTS.values(), ids=INJECTION_INPUTS.keys())
def test_injection_detection_is_linear(build: Build) -> None:
    _assert_linear(detect_injection, build)


# The old patterns, as references (quadratic or worse, but quick on short strings). The URL
# credentials reference already allows an empty user (``redis://:password@host``), a fix.
_OLD_MASK = (
    (re.compile(r"\b(rk_[0-9a-f]{12})_[A-Za-z0-9_\-]+"), r"\1_[REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), "[JWT]"),
    (re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{8,}", re.I), r"\1 [REDACTED]"),
    (re.compile(r"\b(Basic)\s+[A-Za-z0-9+/]{16,}={0,2}", re.I), r"\1 [REDACTED]"),
    (re.compile(r"\b(sk|pk)-[A-Za-z0-9_\-]{16,}"), "[REDACTED]"),
    (re.compile(r"\bgsk_[A-Za-z0-9]{16,}"), "[REDACTED]"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "[REDACTED]"),
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*):[^@\s/]+@", re.I), r"\1:[REDACTED]@"),
    (re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b"), "[EMAIL]"),
    (
        re.compile(
            r"""(?P<key>\b(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|client[_-]?secret)\b"""
            r"""["']?\s*[:=]\s*["']?)(?P<value>[^\s"',;&}]+)""",
            re.I,
        ),
        r"\g<key>[REDACTED]",
    ),
)
_OLD_INJECTION = {
    "system_prompt_exfiltration": re.compile(
        r"\b(reveal|show|print|repeat|output|display|tell me|leak|dump)\b[^.\n]{0,40}?"
        r"\b(system|hidden|initial|original|developer)\s+(prompt|instructions?|message)",
        re.I,
    ),
    "fake_chat_markup": re.compile(
        r"(<\|?(im_start|im_end|system|endoftext)\|?>|\[/?(INST|SYS)\]|<<SYS>>|^\s*(system|assistant)\s*:)",
        re.I | re.M,
    ),
    "exfiltration_link": re.compile(r"!\[[^\]]*\]\(\s*https?://[^)\s]+\?[^)\s]*=", re.I),
}
_OLD_TRAILING = re.compile(r"[\s?!.]+$")


def _old_mask_text(text: str) -> str:
    for pattern, replacement in _OLD_MASK:
        text = pattern.sub(replacement, text)
    return text


def _old_normalise_question(question: str) -> str:
    text = unicodedata.normalize("NFKC", question).casefold()
    return _OLD_TRAILING.sub("", re.sub(r"\s+", " ", text).strip())


def _random_texts(pieces: list[str], count: int = 3000, longest: int = 16) -> list[str]:
    rng = random.Random(20240611)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, longest))) for _ in range(count)]


@pytest.mark.parametrize(
    "pieces",
    [
        ["a", "b", ".", "-", "+", "_", "@", " ", "co", "1", "é", "%", "A"],
        ["eyJ", "a", ".", "-", "_", " ", "J", "1", "eyJhb"],
        ["a", ":", "/", "://", "@", " ", "+", ".", "-", "1", "redis", "x://", "\u212a"],
        ["a", ".", "@", ":", "/", "-", "eyJ", "token", "=", " ", "Bearer ", "sk-", "'", '"'],
        # the literals mask_text looks for before it runs the patterns, in every case
        [
            "api",
            "API",
            "_",
            "-",
            "key",
            "Key",
            "pass",
            "PASS",
            "word",
            "pwd",
            "secret",
            "client",
            "=",
            ":",
            " ",
            "x",
            "Basic ",
            "BEARER ",
            "dXNlcjpwYXNzd29yZA",
            "rk_",
            "0123456789ab",
            "gsk_",
            "abcdefgh",
            "AIza",
            "pk-",
            "\u017f",
            "\u212a",
        ],
    ],
    ids=["email", "jwt", "url", "mixed", "keywords"],
)
def test_masking_matches_the_old_patterns(pieces: list[str]) -> None:
    for text in _random_texts(pieces):
        assert mask_text(text) == _old_mask_text(text), repr(text)


@pytest.mark.parametrize(
    ("flag", "pieces"),
    [
        ("system_prompt_exfiltration", ["show ", "system", " ", "\n", "\t", "prompt", ".", "hidden", "x"]),
        (
            "fake_chat_markup",
            ["\n", " ", "\r", "\t", "\x0b", "system", "assistant", ":", "x", "<|", "\u2028"],
        ),
        (
            "exfiltration_link",
            ["![", "]", "(", ")", " ", "\n", "?", "=", "a", "http://", "HTTPS://", "!", "["],
        ),
    ],
)
def test_injection_flags_match_the_old_patterns(flag: str, pieces: list[str]) -> None:
    for text in _random_texts(pieces):
        expected = _OLD_INJECTION[flag].search(text) is not None
        assert (flag in detect_injection(text)) is expected, repr(text)


def test_question_normalisation_matches_the_old_patterns() -> None:
    for text in _random_texts([" ", "\n", "?", "!", ".", "a", "\u3000", "\x85", "\uff1f", "\t"]):
        assert normalise_question(text) == _old_normalise_question(text), repr(text)
