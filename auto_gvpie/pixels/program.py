"""Pixel program model and validator (version 1, docs/pixel_programs.md).

`parse_program(text_or_obj)` turns JSON text or a decoded object into a
typed `PixelProgram`, or raises `ValidationError` naming the JSON path and the
broken rule, e.g. ``ops[3].width: must be > 0``.

``python -m auto_gvpie.pixels --schema`` prints the JSON Schema;
``python -m auto_gvpie.pixels FILE`` validates a file.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Union

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

PALETTE_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,31}"
_PALETTE_NAME_RE = re.compile(PALETTE_NAME_PATTERN)
_HEX_RE = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_NOT_A_COLOUR = 'must be a colour: a palette name, [r,g,b], [r,g,b,a], "#rrggbb" or "#rrggbbaa"'

OP_NAMES = ("FILL", "SET", "RECT", "LINE", "CIRCLE", "WRITE_TEXT")


class ValidationError(ValueError):
    """A program breaks a rule; `path` is the JSON path, `rule` says which rule."""

    def __init__(self, path: str, rule: str):
        super().__init__(f"{path}: {rule}")
        self.path = path
        self.rule = rule


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


MAX_DEPTH = 512  # JSON nesting; the GPU runner's reader stops at the same depth


def parse_program(source: str | bytes | dict[str, Any]) -> PixelProgram:
    """Parse JSON text (duplicate keys rejected) or validate an already decoded object."""
    document = _decode(source) if isinstance(source, (str, bytes, bytearray)) else source
    if _depth(document) > MAX_DEPTH:
        raise ValidationError("$", f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    return _program(document)


def _depth(value: Any) -> int:
    """Nesting depth of a decoded document, without recursion (a hostile one may be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


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


def _reject_constant(name: str) -> Any:
    raise ValidationError("$", f"invalid JSON: {name} is not allowed")


def _decode(text: str | bytes | bytearray) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError("$", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ValidationError("$", f"invalid UTF-8: {exc.reason}") from None
    except RecursionError:
        raise ValidationError("$", f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None


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
    return PixelProgram(canvas=Canvas(*sides), ops=ops, name=name, palette=palette, metadata=metadata)


def _op_to_json(op: Op) -> dict[str, Any]:
    name = {Fill: "FILL", SetPixel: "SET", Rect: "RECT", Line: "LINE", Circle: "CIRCLE", WriteText: "WRITE_TEXT"}[type(op)]
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
