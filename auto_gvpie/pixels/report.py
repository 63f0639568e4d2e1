"""The render report: what a rendered picture gets visibly wrong, checked without a model.

A valid program can still miss its task: text cut off by the canvas edge, a shape wholly hidden
by a later one or drawn off the canvas, palette colours defined and never used, colours the task
asks for that appear nowhere in the picture. Each problem is said so that the model can act on it
(which op, where, what to change); the pixel kind feeds them back like a refusal (issue 12: the
demo was accepted with a black background and its text half off the canvas).
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .font import CELL, font_bits, glyph_index
from .program import Circle, Fill, Op, PixelProgram, WriteText, op_name
from .render import footprint

MOSTLY_HIDDEN = 0.9  # a shape of which less than a tenth shows is not what the task drew
MAX_TRACKED_OPS = 2000  # hidden-op tracking keeps a mask per op; larger programs skip that check

RGB = tuple[int, int, int]


def _hsv(rgb: RGB) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return h * 360, s, v


def _hue(low: float, high: float, s_min: float = 0.35, v_min: float = 0.2) -> Callable[[RGB], bool]:
    def test(rgb: RGB) -> bool:
        h, s, v = _hsv(rgb)
        inside = low <= h < high if low < high else (h >= low or h < high)
        return inside and s >= s_min and v >= v_min
    return test


def _both(a: Callable[[RGB], bool], b: Callable[[RGB], bool]) -> Callable[[RGB], bool]:
    return lambda rgb: a(rgb) and b(rgb)


def _value(low: float, high: float) -> Callable[[RGB], bool]:
    return lambda rgb: low <= _hsv(rgb)[2] <= high


_GREY = lambda rgb: _hsv(rgb)[1] < 0.2  # noqa: E731 -- one predicate per colour word, side by side
_BLUE, _GREEN, _RED = _hue(190, 260), _hue(70, 170), _hue(340, 20)
# Generous on purpose: a colour wrongly called missing fails a good picture; one wrongly found
# only lets a weak picture through, as before this check.
# Each word: whether a pixel colour counts as it, and a colour that does (suggested in the fix).
COLOUR_WORDS: dict[str, tuple[Callable[[RGB], bool], list[int]]] = {
    "dark blue": (_both(_BLUE, _value(0.0, 0.65)), [0, 0, 139]),
    "light blue": (_hue(180, 250, 0.1, 0.6), [173, 216, 230]),
    "navy": (_both(_BLUE, _value(0.0, 0.65)), [0, 0, 128]),
    "dark green": (_both(_GREEN, _value(0.0, 0.65)), [0, 100, 0]),
    "light green": (_hue(70, 170, 0.1, 0.6), [144, 238, 144]),
    "dark red": (_both(_RED, _value(0.0, 0.65)), [139, 0, 0]),
    "dark grey": (_both(_GREY, _value(0.1, 0.6)), [64, 64, 64]),
    "dark gray": (_both(_GREY, _value(0.1, 0.6)), [64, 64, 64]),
    "light grey": (_both(_GREY, _value(0.5, 0.95)), [200, 200, 200]),
    "light gray": (_both(_GREY, _value(0.5, 0.95)), [200, 200, 200]),
    "black": (_value(0.0, 0.2), [0, 0, 0]),
    "white": (_both(_GREY, _value(0.8, 1.0)), [255, 255, 255]),
    "grey": (_both(_GREY, _value(0.15, 0.9)), [128, 128, 128]),
    "gray": (_both(_GREY, _value(0.15, 0.9)), [128, 128, 128]),
    "red": (_RED, [255, 0, 0]),
    "orange": (_hue(15, 50), [255, 165, 0]),
    "brown": (_both(_hue(10, 50), _value(0.15, 0.7)), [139, 69, 19]),
    "yellow": (_hue(40, 75), [255, 255, 0]),
    "gold": (_hue(35, 65), [255, 215, 0]),
    "green": (_GREEN, [0, 200, 0]),
    "lime": (_hue(70, 140), [0, 255, 0]),
    "teal": (_hue(160, 200), [0, 128, 128]),
    "cyan": (_hue(165, 200), [0, 255, 255]),
    "blue": (_BLUE, [0, 0, 255]),
    "purple": (_hue(250, 320), [128, 0, 128]),
    "violet": (_hue(250, 320), [238, 130, 238]),
    "magenta": (_hue(280, 340), [255, 0, 255]),
    "pink": (_hue(290, 20, 0.15, 0.55), [255, 192, 203]),
}
_WORDS = re.compile(r"\b(" + "|".join(sorted((re.escape(w) for w in COLOUR_WORDS), key=len, reverse=True)) + r")\b",
                    re.I)
_NEGATED = re.compile(r"\b(no|not|without|never)\s+(\w+\s+)?$", re.I)


@dataclass(frozen=True)
class Problem:
    where: str  # a JSON path (`ops[3]`, `palette.fg`) or "picture"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def render_report(program: PixelProgram, image: np.ndarray, task_text: str = "") -> list[Problem]:
    """The picture's visible problems, most important first; empty when there are none.

    `image` is `render(program)`; `task_text` is what the task asked (title and description),
    searched for colour words."""
    # What the task asked for first: a small model acts on the top of a list.
    return (_missing_colours(image, task_text) + _cut_text(program) + _hidden_ops(program)
            + _straddling_text(program) + _unused_palette(program))


def _label(op: Op) -> str:
    text = f' "{op.text}"' if isinstance(op, WriteText) else ""
    return f"{op_name(op)}{text}"


def _cut_text(program: PixelProgram) -> list[Problem]:
    """Text whose glyph pixels fall outside the canvas, with where it would fit."""
    w, h = program.canvas.width, program.canvas.height
    problems = []
    bits = font_bits()
    for i, op in enumerate(program.ops):
        if not isinstance(op, WriteText) or not op.text:
            continue
        glyphs = bits[[glyph_index(ch) for ch in op.text]]  # n x 8 x 8
        rows = np.flatnonzero(glyphs.any(axis=(0, 2)))
        columns = np.flatnonzero(glyphs.transpose(1, 0, 2).reshape(CELL, -1).any(axis=0))
        if not rows.size:
            continue  # only spaces: nothing to cut
        s = op.scale
        top, bottom = op.y + rows[0] * s, op.y + (rows[-1] + 1) * s  # painted rows [top, bottom)
        left, right = op.x + columns[0] * s, op.x + (columns[-1] + 1) * s
        fixes = []
        if right - left > w or bottom - top > h:
            fixes.append(f"at scale {s} it is {right - left}x{bottom - top} pixels, larger than the "
                         f"{w}x{h} canvas: use fewer characters or a smaller scale")
        else:
            if bottom > h:
                fixes.append(f"its glyphs reach row {bottom - 1} but the canvas ends at row {h - 1}: "
                             f"set y to {op.y - (bottom - h)} or less")
            if top < 0:
                fixes.append(f"its glyphs start above the canvas: set y to {op.y - top} or more")
            if right > w:
                fixes.append(f"its glyphs reach column {right - 1} but the canvas ends at column {w - 1}: "
                             f"set x to {op.x - (right - w)} or less")
            if left < 0:
                fixes.append(f"its glyphs start left of the canvas: set x to {op.x - left} or more")
        if fixes:
            # Wholly outside is said here, not among the hidden ops: text gets where it would fit.
            outside = top >= h or bottom <= 0 or left >= w or right <= 0
            what = f"is wholly outside the {w}x{h} canvas, so nothing of it shows" if outside else \
                "is cut off by the canvas edge"
            problems.append(Problem(f"ops[{i}]", f"{_label(op)} {what}; " + "; ".join(fixes)))
    return problems


def _hidden_ops(program: PixelProgram) -> list[Problem]:
    """Ops that leave nothing (or almost nothing) visible: off the canvas, fully transparent, or
    painted over by later opaque ops. Each pixel remembers the last opaque op that painted it."""
    ops = program.ops
    w, h = program.canvas.width, program.canvas.height
    if len(ops) > MAX_TRACKED_OPS:
        return []
    scratch = np.zeros((h, w, 3), dtype=np.uint8)
    owner = np.full((h, w), -1, dtype=np.int32)
    painted: list[tuple[tuple[int, int, int, int], np.ndarray]] = []
    problems: list[Problem] = []
    for i, op in enumerate(ops):
        box, mask = footprint(op, scratch)
        painted.append((box, mask))
        if not mask.any():
            if not isinstance(op, WriteText):  # text off the canvas is reported with where it fits
                problems.append(Problem(f"ops[{i}]", f"{_label(op)} is wholly off the {w}x{h} canvas: "
                                                     f"nothing of it is drawn; use coordinates inside it"))
            continue
        if op.color.a == 0:
            problems.append(Problem(f"ops[{i}]", f"{_label(op)} has alpha 0 and draws nothing"))
            continue
        if op.color.a == 255:
            x0, x1, y0, y1 = box
            owner[y0:y1, x0:x1][mask] = i
    shown = np.bincount(owner[owner >= 0], minlength=len(ops))
    for i, op in enumerate(ops):
        (x0, x1, y0, y1), mask = painted[i]
        total = int(mask.sum())
        if not total or op.color.a < 255:
            continue  # reported above, or translucent: it tints what is under it and hides nothing
        visible = int(shown[i])
        if visible and (isinstance(op, Fill) or visible >= total * (1 - MOSTLY_HIDDEN)):
            continue  # a background filled and mostly drawn over is what a background is for
        covering = owner[y0:y1, x0:x1][mask]
        by = sorted({int(j) for j in covering if j != i})
        names = ", ".join(f"ops[{j}] {_label(ops[j])}" for j in by[:3]) + (" and others" if len(by) > 3 else "")
        if not visible:
            message = f"{_label(op)} is wholly covered by later ops ({names}), so it does not show"
        else:
            message = f"{_label(op)} is mostly covered by later ops ({names}): only {visible} of its {total} pixels show"
        problems.append(Problem(f"ops[{i}]", message + "; move or shrink what covers it, or draw it after them"))
    return problems


def _straddling_text(program: PixelProgram) -> list[Problem]:
    """Text drawn across the edge of a shape, part on it and part on what is around it: hard to
    read, and not where a task puts text ("below it"). Seen: the demo's GVPIE half on a circle
    that filled the canvas, half on the background."""
    ops = program.ops
    w, h = program.canvas.width, program.canvas.height
    if len(ops) > MAX_TRACKED_OPS:
        return []
    scratch = np.zeros((h, w, 3), dtype=np.uint8)
    owner = np.full((h, w), -1, dtype=np.int32)  # the last opaque op under each pixel; -1 the bare canvas
    problems = []
    for i, op in enumerate(ops):
        (x0, x1, y0, y1), mask = footprint(op, scratch)
        if not mask.any():
            continue
        if isinstance(op, WriteText):
            under = owner[y0:y1, x0:x1][mask]
            ids, counts = np.unique(under, return_counts=True)
            if len(ids) > 1 and np.sort(counts)[-2] >= max(2, 0.1 * counts.sum()):  # a sliver over an edge is fine
                parts = " and ".join(f"{n} on {_owner_label(ops, int(j))}" for j, n in zip(ids, counts))
                shapes = [(n, int(j)) for j, n in zip(ids, counts) if j >= 0 and not isinstance(ops[j], Fill)]
                fix = _clear_of(ops, max(shapes)[1], op, scratch) if shapes else "move it onto one of them"
                problems.append(Problem(f"ops[{i}]", f"{_label(op)} lies across the edge of a shape ({parts} of its "
                                                     f"{int(counts.sum())} pixels), so it is hard to read; {fix}"))
        if op.color.a == 255:
            owner[y0:y1, x0:x1][mask] = i
    return problems


def _clear_of(ops: tuple[Op, ...], j: int, text: WriteText, scratch: np.ndarray) -> str:
    """Where the text would be clear of shape `j`: below it, above it, or (no room) with the shape
    made smaller. Concrete numbers: a small model follows "set y to 54" more often than advice."""
    h = scratch.shape[0]
    (_, _, top, bottom), _ = footprint(ops[j], scratch)
    tall = CELL * text.scale
    shape = f"ops[{j}] {_label(ops[j])}"
    if bottom + 1 + tall <= h:
        return f"put it below {shape}: set y to {bottom + 1}"
    if top - 1 - tall >= 0:
        return f"put it above {shape}: set y to {top - 1 - tall}"
    limit = h - tall - 2  # the shape's last row, leaving the text the bottom rows
    how = ""
    if isinstance(ops[j], Circle):
        how = f" (cy + r <= {limit}, e.g. r = {max(1, limit - ops[j].cy)})" if limit > ops[j].cy else \
            f" (move it up and make it smaller: cy + r <= {limit})"
    return f"make {shape} smaller so that it ends above row {limit + 1}{how}, and set the text's y to {limit + 2}"


def _owner_label(ops: tuple[Op, ...], j: int) -> str:
    return "the bare canvas" if j < 0 else f"ops[{j}] {_label(ops[j])}"


def _unused_palette(program: PixelProgram) -> list[Problem]:
    used = {op.color_name for op in program.ops if op.color_name}
    return [Problem(f"palette.{name}", f"the palette colour {name!r} is never used by any op; use it where the "
                                       f"task wants it, or remove it") for name in program.palette if name not in used]


def named_colours(task_text: str) -> list[tuple[str, list[int]]]:
    """The colour words a task asks for (not negated: "no red"), each with a colour that counts as
    it: what the report checks, and what the prompt suggests."""
    wanted: list[str] = []
    for match in _WORDS.finditer(task_text):
        word = match.group(1).lower()
        if word not in wanted and not _NEGATED.search(task_text[:match.start()]):
            wanted.append(word)
    return [(word, COLOUR_WORDS[word][1]) for word in wanted]


def _missing_colours(image: np.ndarray, task_text: str) -> list[Problem]:
    """Colour words in the task with no pixel of that colour in the picture."""
    wanted = named_colours(task_text)
    if not wanted:
        return []
    colours = [tuple(int(c) for c in rgb) for rgb in np.unique(image[..., :3].reshape(-1, 3), axis=0)]
    problems = []
    for word, example in wanted:
        test, _ = COLOUR_WORDS[word]
        if not any(test(rgb) for rgb in colours):
            present = ", ".join(_name(rgb) for rgb in colours[:6]) + (" ..." if len(colours) > 6 else "")
            problems.append(Problem("picture", f"the task asks for {word}, but no pixel of the picture is {word} "
                                               f"(its colours: {present}); paint what should be {word} with a {word} colour "
                                               f"such as {example}"))
    return problems


def _name(rgb: RGB) -> str:
    words = sorted((w for w, (test, _) in COLOUR_WORDS.items() if test(rgb)), key=lambda w: " " in w)  # plain first
    return f"[{rgb[0]},{rgb[1]},{rgb[2]}]" + (f" {words[0]}" if words else "")
