"""Pixel program model and validator (version 1, docs/pixel_programs.md).

`parse_program(text_or_obj)` turns JSON text or a decoded object into a
typed `PixelProgram`, or raises `ValidationError` naming the JSON path and the
broken rule, e.g. ``ops[3].width: must be > 0``. `program_from_answer(text)`
does the same for a model's answer, which may wrap the program in prose or a
fenced block. Hostile text (too large, nested 100,000 deep, a 5,000-digit
number, lone surrogates, NaN) is a `ValidationError` too, never another
exception; so is a program whose rendering would cost too much (`render_cost`).

``python -m auto_gvpie.pixels --schema`` prints the JSON Schema;
``python -m auto_gvpie.pixels FILE`` validates a file.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Union

from auto_gvpie import jsontext

logger = logging.getLogger(__name__)

MAX_CANVAS_SIDE = 4096
MAX_OPS = 10000
MAX_TEXT = 256
MAX_SCALE = 16
MAX_PALETTE = 256
MAX_NAME = 64
MAX_METADATA_BYTES = 4096
COORD_LIMIT = 8192
MAX_EXTENT = 8192
# The document text, in UTF-8 bytes, checked before it is decoded. Real programs are far smaller
# (the examples are 1-2 KB; bench/programs.py's 10,000-op 4096x4096 program is 0.93 MB compact and
# 1.74 MB with indent=2, as the engine writes artifacts); a 61 MB program took 11.5 s and 1.4 GB
# to decode before this limit.
MAX_PROGRAM_BYTES = 4_000_000

# Render cost (docs/pixel_programs.md, "Limits and cost"): the canvas pixels each op makes the CPU
# renderer touch, after clipping, times a weight. Measured with `render` on a 2-core Xeon (load < 1),
# 4096x4096 canvas: opaque block copy 0.14 ns/pixel, translucent block blend 1.0 ns, CIRCLE and
# WRITE_TEXT masks 7-9 ns per bounding-box pixel (either alpha), LINE 17 ns (opaque) and 35 ns
# (translucent) per point. One cost unit is thus about 0.125 ns there: bench/programs.py's
# mixed_program(4096, 4096, 10000, 2) costs 46,752,564,353 (5.8 s predicted, 5.9 s measured);
# 10,000 translucent full-canvas FILLs cost 1,342,177,280,000 (168 s predicted, 169 s measured);
# 10,000 translucent full-canvas CIRCLEs 10,737,418,240,000 (about 22 minutes).
COST_WEIGHTS = {  # op: (opaque, translucent) weight per touched pixel
    "FILL": (1, 8), "SET": (1, 8), "RECT": (1, 8),
    "LINE": (128, 256), "CIRCLE": (64, 64), "WRITE_TEXT": (64, 64),
}
MAX_RENDER_COST = 100_000_000_000  # about 12.5 s of CPU rendering on that machine (at least 9 s, at most ~20 s)

PALETTE_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,31}"
_PALETTE_NAME_RE = re.compile(PALETTE_NAME_PATTERN)
_HEX_RE = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_NOT_A_COLOUR = 'must be a colour: a palette name, [r,g,b], [r,g,b,a], "#rrggbb" or "#rrggbbaa"'

OP_NAMES = ("FILL", "SET", "RECT", "LINE", "CIRCLE", "WRITE_TEXT")


class ValidationError(ValueError):
    """A program breaks a rule; `path` is the JSON path, `rule` says which rule.

    For JSON syntax errors the path is `$` and `line`, `column` (1-based) say where.
    """

    def __init__(self, path: str, rule: str, *, line: int | None = None, column: int | None = None):
        super().__init__(f"{path}: {rule}")
        self.path = path
        self.rule = rule
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Color:
    r: int
    g: int
    b: int
    a: int = 255

    def to_json(self) -> list[int]:
        return [self.r, self.g, self.b] if self.a == 255 else [self.r, self.g, self.b, self.a]


@dataclass(frozen=True)
class Canvas:
    width: int
    height: int


@dataclass(frozen=True)
class Fill:
    color: Color
    color_name: str | None = None


@dataclass(frozen=True)
class SetPixel:
    x: int
    y: int
    color: Color
    color_name: str | None = None


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int
    color: Color
    fill: bool = True
    color_name: str | None = None


@dataclass(frozen=True)
class Line:
    x1: int
    y1: int
    x2: int
    y2: int
    color: Color
    color_name: str | None = None


@dataclass(frozen=True)
class Circle:
    cx: int
    cy: int
    r: int
    color: Color
    fill: bool = True
    color_name: str | None = None


@dataclass(frozen=True)
class WriteText:
    x: int
    y: int
    text: str
    color: Color
    scale: int = 1
    color_name: str | None = None


Op = Union[Fill, SetPixel, Rect, Line, Circle, WriteText]

_COORD = (-COORD_LIMIT, COORD_LIMIT)
_EXTENT = (1, MAX_EXTENT)

# Per op: its class, then (field, kind, range-or-None, default) in the order they are checked.
# A field with default None is required.
_OP_FIELDS: dict[str, tuple[type, tuple[tuple[str, str, tuple[int, int] | None, Any], ...]]] = {
    "FILL": (Fill, ()),
    "SET": (SetPixel, (("x", "int", _COORD, None), ("y", "int", _COORD, None))),
    "RECT": (Rect, (("x", "int", _COORD, None), ("y", "int", _COORD, None),
                    ("width", "int", _EXTENT, None), ("height", "int", _EXTENT, None),
                    ("fill", "bool", None, True))),
    "LINE": (Line, (("x1", "int", _COORD, None), ("y1", "int", _COORD, None),
                    ("x2", "int", _COORD, None), ("y2", "int", _COORD, None))),
    "CIRCLE": (Circle, (("cx", "int", _COORD, None), ("cy", "int", _COORD, None),
                        ("r", "int", (0, MAX_EXTENT), None), ("fill", "bool", None, True))),
    "WRITE_TEXT": (WriteText, (("x", "int", _COORD, None), ("y", "int", _COORD, None),
                               ("text", "text", None, None), ("scale", "int", (1, MAX_SCALE), 1))),
}


@dataclass(frozen=True)
class PixelProgram:
    canvas: Canvas
    ops: tuple[Op, ...]
    name: str = ""
    palette: dict[str, Color] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, obj: Any) -> PixelProgram:
        """Validate a decoded JSON value; raise ValidationError on the first problem."""
        return _program(obj)

    def to_json(self) -> dict[str, Any]:
        """The program as a JSON-ready dict (palette names kept, colours as int lists)."""
        doc: dict[str, Any] = {"kind": "pixel_program", "version": 1}
        if self.name:
            doc["name"] = self.name
        doc["canvas"] = {"width": self.canvas.width, "height": self.canvas.height}
        if self.palette:
            doc["palette"] = {key: c.to_json() for key, c in self.palette.items()}
        doc["ops"] = [_op_to_json(op) for op in self.ops]
        if self.metadata is not None:
            doc["metadata"] = self.metadata
        return doc


MAX_DEPTH = jsontext.MAX_DEPTH  # JSON nesting; the GPU runner's reader stops at the same depth


def parse_program(source: str | bytes | dict[str, Any]) -> PixelProgram:
    """Parse JSON text (duplicate keys rejected) or validate an already decoded object."""
    document = decode_json(source) if isinstance(source, (str, bytes, bytearray)) else source
    if jsontext.depth(document) > MAX_DEPTH:
        raise ValidationError("$", f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    return _program(document)


def program_from_answer(text: str) -> tuple[dict[str, Any], PixelProgram]:
    """The first JSON object in a model's answer (bare, fenced or wrapped in prose), validated.

    Returns the decoded document and the program. Every bad answer raises `ValidationError`:
    too large (`$`), no JSON object (`$`), invalid JSON (`$`, with line and column in the
    answer), too deep or a huge number (`$`, line and column), a lone surrogate (its JSON
    path), or any rule of the language (its JSON path).
    When the answer holds several objects, the first with a "kind" field wins (an example op
    quoted in prose does not hide the program); without one, the first object or the first
    syntax error in something that starts like a JSON object, whichever comes first.
    """
    if isinstance(text, (bytes, bytearray)):
        _check_size(text, "answer")
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError("$", f"invalid JSON: not UTF-8 text ({exc.reason})") from None
    _check_size(text, "answer")
    document = _find_document(text)
    return document, _program(document)


def decode_json(source: str | bytes | bytearray) -> Any:
    """The JSON reader of `parse_program`: size limit, then decoding that keeps duplicate keys
    (for the validator to reject) and turns every problem into a `ValidationError`."""
    _check_size(source, "program")
    if isinstance(source, (bytes, bytearray)):
        try:
            source = bytes(source).decode("utf-8")  # jsontext skips one byte-order mark, as the runner does
        except UnicodeDecodeError as exc:
            line = source.count(b"\n", 0, exc.start) + 1
            byte = exc.start - source.rfind(b"\n", 0, exc.start)
            raise ValidationError("$", f"invalid JSON: not UTF-8 text ({exc.reason} at line {line}, byte {byte})",
                                  line=line) from None
    try:
        return jsontext.loads(source, object_pairs_hook=_pairs_hook, max_depth=MAX_DEPTH)
    except jsontext.JSONTextError as exc:
        raise _json_error(exc, source.removeprefix("\ufeff")) from None  # offsets follow the mark


def _check_size(source: str | bytes | bytearray, what: str) -> None:
    if isinstance(source, str):
        if len(source) * 4 <= MAX_PROGRAM_BYTES:  # at most 4 UTF-8 bytes per character
            return
        size = len(source.encode("utf-8", "surrogatepass"))
    else:
        size = len(source)
    if size > MAX_PROGRAM_BYTES:
        raise ValidationError("$", f"the {what} is {size:,} bytes; at most {MAX_PROGRAM_BYTES:,}")


def size_error(size: int) -> ValidationError:
    """The error for a program file of `size` bytes over the limit (checked before reading it)."""
    return ValidationError("$", f"the program is {size:,} bytes; at most {MAX_PROGRAM_BYTES:,}")


def _json_error(exc: jsontext.JSONTextError, source: str, base: int = 0) -> ValidationError:
    """A ValidationError for a JSONTextError at offset `base` + exc.offset of `source`."""
    if exc.path is not None:
        return ValidationError(exc.path, "must not contain unpaired surrogates")
    if exc.offset is None:
        return ValidationError("$", f"invalid JSON: {exc.message}")
    line, column = jsontext.line_col(source, base + exc.offset)
    return ValidationError("$", f"invalid JSON at line {line} column {column}: {exc.message}",
                           line=line, column=column)


_FENCE_RE = re.compile(r"```[\w+-]*[ \t]*\r?\n(.*?)```", re.S)  # any info string: json, JSON, ...
# Where a JSON object (or a Python dict, to name its error) can begin: `{` then `"`, `'` or `}`.
_OBJECT_START_RE = re.compile(r"\{\s*[\"'}]")
# Objects tried in one answer. A real answer holds a few; Python's JSONDecodeError counts the lines
# before the error, so a million broken objects would take minutes (quadratic) without a cap.
MAX_ANSWER_OBJECTS = 100
_NO_JSON = "the answer contains no JSON object; answer with the pixel program JSON only"


def _is_syntax_error(exc: jsontext.JSONTextError) -> bool:
    """Python's own JSON syntax errors; the others (depth, numbers, NaN, surrogates) are definite."""
    return exc.path is None and exc.offset is not None and exc.message.startswith(
        ("Expecting", "Unterminated", "Invalid", "Extra data"))


def _find_document(text: str) -> dict[str, Any]:
    """Fenced blocks first, then the whole answer; linear time, at most MAX_ANSWER_OBJECTS tries."""
    spans = [(m.start(1), m.end(1)) for m in _FENCE_RE.finditer(text)] + [(0, len(text))]
    fallback: dict[str, Any] | ValidationError | None = None
    tries = 0
    for start, end in spans:
        chunk = text[start:end]
        match = _OBJECT_START_RE.search(chunk)
        while match and tries < MAX_ANSWER_OBJECTS:
            tries += 1
            pos = match.start()
            try:
                value, resume = jsontext.decode_at(chunk, pos, object_pairs_hook=_pairs_hook, max_depth=MAX_DEPTH)
            except jsontext.JSONTextError as exc:
                if not _is_syntax_error(exc):
                    raise _json_error(exc, text, start) from None
                if fallback is None:
                    fallback = _json_error(exc, text, start)
                # The objects nested before the error are parts of the broken one, not answers.
                resume = max(pos + 1, exc.offset)
            else:
                if "kind" in value:
                    return value
                if fallback is None:
                    fallback = value
            match = _OBJECT_START_RE.search(chunk, resume)
    if fallback is None:
        raise ValidationError("$", _NO_JSON)
    if isinstance(fallback, ValidationError):
        raise fallback
    return fallback


class _KeyedDict(dict):
    """A decoded JSON object that remembers keys that appeared more than once."""

    duplicates: tuple[str, ...] = ()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _KeyedDict:
    obj = _KeyedDict()
    dups = []
    for key, value in pairs:
        if key in obj:
            dups.append(key)
        obj[key] = value
    obj.duplicates = tuple(dups)
    return obj


def _key(path: str, key: str) -> str:
    return key if path == "$" else f"{path}.{key}"


def _object(value: Any, path: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(path, "must be an object")
    for dup in getattr(value, "duplicates", ()):
        raise ValidationError(_key(path, dup), "duplicate key")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise ValidationError(_key(path, str(key)), "unknown field")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    # bool is a subclass of int in Python but not an integer in JSON.
    if type(value) is not int:
        raise ValidationError(path, "must be an integer")
    if value < low:
        raise ValidationError(path, "must be > 0" if low == 1 else f"at least {low}")
    if value > high:
        raise ValidationError(path, f"at most {high}")
    return value


def _string(value: Any, path: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(path, "must be a string")
    if len(value) > max_chars:
        raise ValidationError(path, f"at most {max_chars} characters")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValidationError(path, "must not contain unpaired surrogates")
    return value


def _color(value: Any, path: str, palette: dict[str, Color] | None) -> tuple[Color, str | None]:
    """Resolve a colour; `palette` None means names are not allowed (palette entries)."""
    if isinstance(value, str):
        if _HEX_RE.fullmatch(value):
            digits = value[1:]
            channels = [int(digits[i:i + 2], 16) for i in range(0, len(digits), 2)]
            return Color(*channels), None
        if _PALETTE_NAME_RE.fullmatch(value):
            if palette is None:
                raise ValidationError(path, "must not be a palette name (palette entries cannot refer to each other)")
            if value not in palette:
                raise ValidationError(path, f"unknown palette name {json.dumps(value)}")
            return palette[value], value
        raise ValidationError(path, _NOT_A_COLOUR)
    if isinstance(value, (list, tuple)):
        if len(value) not in (3, 4):
            raise ValidationError(path, "must have 3 or 4 items")
        return Color(*(_int(v, f"{path}[{i}]", 0, 255) for i, v in enumerate(value))), None
    raise ValidationError(path, _NOT_A_COLOUR)


def _palette(value: Any) -> dict[str, Color]:
    entries = _object(value, "palette", None)
    if len(entries) > MAX_PALETTE:
        raise ValidationError("palette", f"at most {MAX_PALETTE} entries")
    palette = {}
    for key, spec in entries.items():
        if not isinstance(key, str) or not _PALETTE_NAME_RE.fullmatch(key):
            raise ValidationError("palette", f"invalid palette name {json.dumps(key)} (must match {PALETTE_NAME_PATTERN})")
        palette[key] = _color(spec, f"palette.{key}", None)[0]
    return palette


def _op(value: Any, path: str, palette: dict[str, Color]) -> Op:
    obj = _object(value, path, None)
    if "op" not in obj:
        raise ValidationError(f"{path}.op", "required")
    name = obj["op"]
    if not isinstance(name, str):
        raise ValidationError(f"{path}.op", "must be a string")
    if name not in _OP_FIELDS:
        raise ValidationError(f"{path}.op", f"unknown op {json.dumps(name)} (expected one of {', '.join(OP_NAMES)})")
    cls, fields = _OP_FIELDS[name]
    _object(obj, path, ("op", "color") + tuple(f[0] for f in fields))
    args: dict[str, Any] = {}
    for fname, kind, bounds, default in fields:
        fpath = f"{path}.{fname}"
        if fname not in obj:
            if default is None:
                raise ValidationError(fpath, "required")
            args[fname] = default
            continue
        raw = obj[fname]
        if kind == "int":
            args[fname] = _int(raw, fpath, *bounds)
        elif kind == "bool":
            if not isinstance(raw, bool):
                raise ValidationError(fpath, "must be a boolean")
            args[fname] = raw
        else:
            args[fname] = _string(raw, fpath, MAX_TEXT)
    if "color" not in obj:
        raise ValidationError(f"{path}.color", "required")
    args["color"], args["color_name"] = _color(obj["color"], f"{path}.color", palette)
    return cls(**args)


def _metadata(value: Any) -> dict[str, Any]:
    obj = _object(value, "metadata", None)
    _no_duplicates(obj, "metadata")
    try:
        encoded = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("metadata", "must not contain unpaired surrogates") from None
    except (TypeError, ValueError):
        raise ValidationError("metadata", "must contain only JSON values") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise ValidationError("metadata", f"at most {MAX_METADATA_BYTES} bytes when serialised")
    return obj


def _no_duplicates(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for dup in getattr(value, "duplicates", ()):
            raise ValidationError(_key(path, dup), "duplicate key")
        for key, item in value.items():
            _no_duplicates(item, _key(path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_duplicates(item, f"{path}[{i}]")


def _program(obj: Any) -> PixelProgram:
    doc = _object(obj, "$", ("kind", "version", "name", "canvas", "palette", "ops", "metadata"))
    if "kind" not in doc:
        raise ValidationError("kind", "required")
    if doc["kind"] != "pixel_program":
        raise ValidationError("kind", 'must be "pixel_program"')
    if "version" not in doc:
        raise ValidationError("version", "required")
    if type(doc["version"]) is not int or doc["version"] != 1:
        raise ValidationError("version", "must be 1")
    name = _string(doc["name"], "name", MAX_NAME) if "name" in doc else ""
    if "canvas" not in doc:
        raise ValidationError("canvas", "required")
    canvas_obj = _object(doc["canvas"], "canvas", ("width", "height"))
    sides = []
    for side in ("width", "height"):
        if side not in canvas_obj:
            raise ValidationError(f"canvas.{side}", "required")
        sides.append(_int(canvas_obj[side], f"canvas.{side}", 1, MAX_CANVAS_SIDE))
    palette = _palette(doc["palette"]) if "palette" in doc else {}
    if "ops" not in doc:
        raise ValidationError("ops", "required")
    raw_ops = doc["ops"]
    if not isinstance(raw_ops, list):
        raise ValidationError("ops", "must be an array")
    if len(raw_ops) > MAX_OPS:
        raise ValidationError("ops", f"at most {MAX_OPS} items")
    ops = tuple(_op(raw, f"ops[{i}]", palette) for i, raw in enumerate(raw_ops))
    metadata = _metadata(doc["metadata"]) if "metadata" in doc else None
    program = PixelProgram(canvas=Canvas(*sides), ops=ops, name=name, palette=palette, metadata=metadata)
    _check_cost(program)
    return program


_OP_NAME = {Fill: "FILL", SetPixel: "SET", Rect: "RECT", Line: "LINE", Circle: "CIRCLE", WriteText: "WRITE_TEXT"}


def op_name(op: Op) -> str:
    """The op's name as a program writes it: "RECT", "WRITE_TEXT", ..."""
    return _OP_NAME[type(op)]


def _span(low: int, high: int, size: int) -> int:
    """How many of the integers low..high-1 lie in 0..size-1."""
    return max(0, min(high, size) - max(low, 0))


def op_pixels(op: Op, width: int, height: int) -> int:
    """The canvas pixels the CPU renderer touches for `op` (after clipping), as the cost counts them:
    a CIRCLE or WRITE_TEXT its clipped bounding box (the mask is computed over all of it), a LINE
    its clipped major-axis length."""
    if isinstance(op, Fill):
        return width * height
    if isinstance(op, SetPixel):
        return _span(op.x, op.x + 1, width) * _span(op.y, op.y + 1, height)
    if isinstance(op, Rect):
        across = _span(op.x, op.x + op.width, width)
        if op.fill or op.width <= 2 or op.height <= 2:
            return across * _span(op.y, op.y + op.height, height)
        bottom, right = op.y + op.height - 1, op.x + op.width - 1
        inner = _span(op.y + 1, bottom, height)
        return (across * (_span(op.y, op.y + 1, height) + _span(bottom, bottom + 1, height))
                + inner * (_span(op.x, op.x + 1, width) + _span(right, right + 1, width)))
    if isinstance(op, Line):
        dx, dy = op.x2 - op.x1, op.y2 - op.y1
        if dx == 0 and dy == 0:
            return _span(op.x1, op.x1 + 1, width) * _span(op.y1, op.y1 + 1, height)
        if abs(dx) >= abs(dy):
            return _span(min(op.x1, op.x2), max(op.x1, op.x2) + 1, width)
        return _span(min(op.y1, op.y2), max(op.y1, op.y2) + 1, height)
    if isinstance(op, Circle):
        return (_span(op.cx - op.r, op.cx + op.r + 1, width) * _span(op.cy - op.r, op.cy + op.r + 1, height))
    advance = 8 * op.scale
    return _span(op.x, op.x + len(op.text) * advance, width) * _span(op.y, op.y + advance, height)


def _cost_parts(program: PixelProgram) -> dict[tuple[str, bool], list[int]]:
    """Per (op name, translucent): [number of ops, cost]. Ops the renderer skips cost nothing:
    those with alpha 0 and those before the last opaque FILL."""
    ops = program.ops
    start = next((i for i in range(len(ops) - 1, -1, -1) if isinstance(ops[i], Fill) and ops[i].color.a == 255), 0)
    parts: dict[tuple[str, bool], list[int]] = {}
    for op in ops[start:]:
        if op.color.a == 0:
            continue
        name, translucent = _OP_NAME[type(op)], op.color.a < 255
        part = parts.setdefault((name, translucent), [0, 0])
        part[0] += 1
        part[1] += op_pixels(op, program.canvas.width, program.canvas.height) * COST_WEIGHTS[name][translucent]
    return parts


def render_cost(program: PixelProgram) -> int:
    """The program's render cost (weighted pixel writes, see COST_WEIGHTS); at most MAX_RENDER_COST."""
    return sum(cost for _count, cost in _cost_parts(program).values())


def _check_cost(program: PixelProgram) -> None:
    parts = _cost_parts(program)
    total = sum(cost for _count, cost in parts.values())
    if total <= MAX_RENDER_COST:
        return
    (name, translucent), (count, cost) = max(
        sorted(parts.items(), key=lambda item: (OP_NAMES.index(item[0][0]), item[0][1])),
        key=lambda item: item[1][1])  # max keeps the first of equals: in OP_NAMES order, opaque first
    raise ValidationError("ops", f"render cost {total:,} exceeds the limit of {MAX_RENDER_COST:,} (weighted pixel "
                                 f"writes; most of it: {count:,} {'translucent ' if translucent else ''}{name} "
                                 f"ops, {cost:,})")


def _op_to_json(op: Op) -> dict[str, Any]:
    name = _OP_NAME[type(op)]
    out: dict[str, Any] = {"op": name}
    for fname, _kind, _bounds, _default in _OP_FIELDS[name][1]:
        out[fname] = getattr(op, fname)
    out["color"] = op.color_name if op.color_name is not None else op.color.to_json()
    return out


def json_schema(max_ops: int = MAX_OPS, max_text: int = MAX_TEXT) -> dict[str, Any]:
    """JSON Schema of the language, for grammar-constrained generation.

    Every array and string is bounded so that a constrained decoder terminates.
    It describes a subset of valid programs (metadata is limited to a short
    description) and cannot express every rule (palette names must exist,
    duplicate keys), so always validate after decoding. Pass a smaller
    `max_ops` when the server expands repetition bounds into its grammar.
    """

    def integer(low: int, high: int) -> dict[str, Any]:
        return {"type": "integer", "minimum": low, "maximum": high}

    hex_pattern = "#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?"
    rgba = {"type": "array", "items": integer(0, 255), "minItems": 3, "maxItems": 4}
    colour = {"anyOf": [
        {"type": "string", "maxLength": 32, "pattern": f"^({hex_pattern}|{PALETTE_NAME_PATTERN})$"},
        rgba,
    ]}
    palette_colour = {"anyOf": [{"type": "string", "maxLength": 9, "pattern": f"^{hex_pattern}$"}, rgba]}
    field_schema = {
        "int": lambda bounds: integer(*bounds),
        "bool": lambda _bounds: {"type": "boolean"},
        "text": lambda _bounds: {"type": "string", "maxLength": max_text},
    }
    op_schemas = []
    for name in OP_NAMES:
        fields = _OP_FIELDS[name][1]
        props: dict[str, Any] = {"op": {"type": "string", "enum": [name]}}
        props.update({f: field_schema[kind](bounds) for f, kind, bounds, _d in fields})
        props["color"] = colour
        required = ["op"] + [f for f, _k, _b, default in fields if default is None] + ["color"]
        op_schemas.append({"type": "object", "properties": props, "required": required,
                           "additionalProperties": False})
    return {
        "title": "pixel_program",
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["pixel_program"]},
            "version": {"type": "integer", "enum": [1]},
            "name": {"type": "string", "maxLength": MAX_NAME},
            "canvas": {"type": "object",
                       "properties": {"width": integer(1, MAX_CANVAS_SIDE), "height": integer(1, MAX_CANVAS_SIDE)},
                       "required": ["width", "height"], "additionalProperties": False},
            "palette": {"type": "object", "maxProperties": MAX_PALETTE,
                        "propertyNames": {"pattern": f"^{PALETTE_NAME_PATTERN}$"},
                        "additionalProperties": palette_colour},
            "ops": {"type": "array", "maxItems": max_ops, "items": {"anyOf": op_schemas}},
            "metadata": {"type": "object",
                         "properties": {"description": {"type": "string", "maxLength": 500}},
                         "additionalProperties": False},
        },
        "required": ["kind", "version", "canvas", "ops"],
        "additionalProperties": False,
    }
