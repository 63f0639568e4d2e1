"""Reading JSON that people or models wrote, without letting a hostile document crash the reader.

`json` itself raises RecursionError on deep nesting, ValueError on a 5,000-digit integer
(Python's int/str conversion limit) and happily returns lone surrogates that cannot be
written anywhere later. Here all of those become one `JSONTextError` that says where:
the offset (for line and column) or the JSON path of the value.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable

MAX_DEPTH = 512  # the pixel programs' limit, which the GPU runner's reader shares
MAX_NUMBER_CHARS = 100  # no field of ours needs a longer number; Python refuses 4,300+ digits anyway


class JSONTextError(ValueError):
    """Unusable JSON text; `offset` (into the text) or `path` (a JSON path) says where."""

    def __init__(self, message: str, offset: int | None = None, path: str | None = None):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.path = path


class _BadToken(Exception):
    def __init__(self, token: str, why: str):
        self.token = token
        self.why = why


def _number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise _BadToken(text, f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
        value = convert(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise _BadToken(text, f"the number {text} is too large")
        return value
    return parse


def _reject_constant(name: str) -> Any:
    raise _BadToken(name, f"{name} is not valid JSON")


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset`."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _too_deep_at(text: str, start: int, limit: int) -> int:
    """Where nesting first exceeds `limit`, scanning outside strings (only on the error path)."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return index
        elif char in "]}":
            depth -= 1
    return start


def decode_at(text: str, pos: int = 0, *, object_pairs_hook: Callable | None = None,
              max_depth: int = MAX_DEPTH) -> tuple[Any, int]:
    """Decode one JSON value starting at `pos`; returns it and the offset after it."""
    decoder = json.JSONDecoder(object_pairs_hook=object_pairs_hook, parse_int=_number(int),
                               parse_float=_number(float), parse_constant=_reject_constant)
    try:
        value, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise JSONTextError(exc.msg, offset=exc.pos) from None
    except RecursionError:
        raise JSONTextError(f"nested deeper than {max_depth} levels",
                            offset=_too_deep_at(text, pos, max_depth)) from None
    except _BadToken as exc:
        raise JSONTextError(exc.why, offset=max(text.find(exc.token, pos), pos)) from None
    if depth(value) > max_depth:
        raise JSONTextError(f"nested deeper than {max_depth} levels", offset=_too_deep_at(text, pos, max_depth))
    bad = surrogate_path(value)
    if bad is not None:
        raise JSONTextError("a lone surrogate (\\ud800-\\udfff) is not text", path=bad)
    return value, end


def loads(text: str | bytes, *, object_pairs_hook: Callable | None = None, max_depth: int = MAX_DEPTH) -> Any:
    """One whole JSON document (a UTF-8 byte-order mark is accepted)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JSONTextError(f"not UTF-8 text ({exc.reason})", offset=None) from None
    text = text.removeprefix("\ufeff")
    start = len(text) - len(text.lstrip())
    if start == len(text):
        raise JSONTextError("empty document: expected a JSON value", offset=start)
    value, end = decode_at(text, start, object_pairs_hook=object_pairs_hook, max_depth=max_depth)
    rest = len(text) - len(text[end:].lstrip())
    if rest < len(text):
        raise JSONTextError("extra data after the JSON value", offset=rest)
    return value


def depth(value: Any) -> int:
    """Nesting depth of a decoded value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def surrogate_path(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first string (key or value) holding a lone surrogate, or None."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if _has_surrogate(node):
                return where
        elif isinstance(node, dict):
            for key, child in node.items():
                child_path = f"{where}.{key}" if where != "$" else str(key)
                if isinstance(key, str) and _has_surrogate(key):
                    return where
                stack.append((child, child_path))
        elif isinstance(node, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(node))
    return None


def first_object(text: str) -> dict:
    """The first JSON object in a model's answer: bare, fenced or wrapped in prose (a grammar
    keeps a server's answer bare; a model answering without one often fences it). ValueError
    when there is none."""
    pos = text.find("{")
    while pos != -1:
        try:
            value, _ = decode_at(text, pos)
        except JSONTextError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(value, dict):
            return value
        pos = text.find("{", pos + 1)
    raise ValueError("no JSON object in the answer" + (f": {text.strip()[:80]!r}" if text.strip() else " (it was empty)"))
