"""English sentences from the Python standard library: the first sentence of the
docstring of every public function, class and method of a fixed list of modules,
cleaned (reST roles and emphasis dropped, whitespace collapsed), kept when it is ASCII,
starts with a capital, ends with a period and has 8 to 60 words, deduplicated and
ordered by the sha256 of its text (a fixed, well-mixed order). The docstrings change
between Python versions, so the shipped file (``sentences.txt``), not this extraction,
is the data."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import warnings
from typing import Iterator

__all__ = ["MODULES", "SHIPPED_COUNT", "first_sentence", "keep", "stdlib_sentences"]

MODULES = (
    "abc", "argparse", "ast", "asyncio.events", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "configparser", "contextlib", "copy", "csv", "datetime", "decimal", "difflib", "dis", "email.message", "enum",
    "filecmp", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html.parser", "http.client", "http.cookiejar", "imaplib", "inspect", "ipaddress", "json", "json.decoder",
    "locale", "logging", "logging.handlers", "mailbox", "mimetypes", "numbers", "operator", "optparse", "os",
    "pathlib", "pdb", "pickle", "pkgutil", "platform", "poplib", "pprint", "queue", "random", "re", "reprlib",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "trace", "traceback", "typing", "unittest.case", "unittest.mock", "urllib.parse", "urllib.request",
    "uuid", "warnings", "wave", "weakref", "xml.dom.minidom", "zipfile", "zipimport",
)
"""The modules read, in this order (only objects defined in the module itself)."""

SHIPPED_COUNT = 1000
"""How many sentences ship: the first ones in sha256 order."""

MIN_WORDS, MAX_WORDS = 8, 60
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]*)`")
_EMPHASIS = re.compile(r"\*+([^*\s][^*]*)\*+")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")
_REFUSED = re.compile(r"\bissues?\s*(?:#|no\.?\s*|number\s*)?\d|>>>|https?:|\.md\b", re.IGNORECASE)


def first_sentence(doc: str) -> str:
    """The first sentence of the first paragraph, on one line, without reST markup."""
    paragraph = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    text = " ".join(paragraph.split())
    text = _EMPHASIS.sub(r"\1", _ROLE.sub(r"\1", text)).replace("``", "").replace("`", "")
    end = _SENTENCE_END.search(text)
    return text[:end.start()] if end else text


def keep(sentence: str) -> bool:
    """ASCII, a capital first, a period last, 8..60 words, no links, prompts or
    tracker references."""
    words = len(sentence.split())
    return (sentence.isascii() and sentence[:1].isupper() and sentence.endswith(".")
            and MIN_WORDS <= words <= MAX_WORDS and not _REFUSED.search(sentence))


def _documented(module) -> Iterator[object]:
    """Public functions and classes defined in ``module`` and the public methods of
    those classes, by name."""
    for name in sorted(dir(module)):
        obj = getattr(module, name)
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            continue
        yield obj
        if inspect.isclass(obj):
            for method_name, method in sorted(vars(obj).items()):
                if not method_name.startswith("_") and (inspect.isfunction(method) or inspect.ismethoddescriptor(method)):
                    yield method


def stdlib_sentences(count: int = SHIPPED_COUNT) -> list[str]:
    """The first ``count`` kept sentences in sha256 order (see the module docstring)."""
    found: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated aliases such as typing.io
        for module_name in MODULES:
            for obj in _documented(importlib.import_module(module_name)):
                doc = inspect.getdoc(obj)
                if doc and keep(first_sentence(doc)):
                    found.add(first_sentence(doc))
    ordered = sorted(found, key=lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest())
    return ordered[:count]
