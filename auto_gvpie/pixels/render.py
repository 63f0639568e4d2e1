"""CPU renderer for pixel programs: NumPy rasterisation, PNG, ASCII preview.

The rules are those of docs/pixel_programs.md. `render` is the vectorised
renderer: each op touches only its clipped bounding box and blends with the
spec's integer formula in uint16.
`render_reference` is the same spec written literally, one pixel at a time;
it exists to cross-check `render` and as the benchmark baseline.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .font import CELL, font_bits, glyph_index
from .program import Circle, Color, Fill, Line, Op, PixelProgram, Rect, SetPixel, WriteText

logger = logging.getLogger(__name__)

ASCII_RAMP = " .:-=+*#%@"
_BAND_ROWS = 64
MAX_PNG_SIDE = 32768


def _pixel_row(channels: tuple[int, int, int], width: int, dtype: type) -> np.ndarray:
    """`width` copies of one pixel as a contiguous (width, 3) array.

    NumPy runs its inner loop over the last axis; broadcasting a bare 3-vector
    makes that loop 3 elements long and 5-50x slower than broadcasting a whole
    row, whose (width, 3) axes merge into one loop of width*3 elements.
    """
    row = np.empty((width, 3), dtype=dtype)
    row[:] = channels
    return row


def _blended(values: np.ndarray, color: Color) -> np.ndarray:
    """`values` (..., n, 3) blended with `color`: the spec's formula, exactly.

    s*a + d*(255-a) is a convex combination, at most 255*255, so with the +127
    it stays below 65536 and the whole computation fits in uint16 (half the
    memory traffic of int32; numpy divides by a constant without a division).
    """
    a = color.a
    x = values.astype(np.uint16)
    x *= 255 - a
    x += _pixel_row((color.r * a + 127, color.g * a + 127, color.b * a + 127), x.shape[-2], np.uint16)
    x //= 255
    return x


def _paint_block(rgb: np.ndarray, y0: int, y1: int, x0: int, x1: int, color: Color) -> None:
    """Blend a clipped, non-empty rectangle [y0, y1) x [x0, x1)."""
    if color.a == 255:
        rgb[y0:y1, x0:x1] = _pixel_row((color.r, color.g, color.b), x1 - x0, np.uint8)
        return
    # Bands of rows keep the uint16 temporary small enough to stay in cache.
    for top in range(y0, y1, _BAND_ROWS):
        view = rgb[top:min(top + _BAND_ROWS, y1), x0:x1]
        view[...] = _blended(view, color)


def _paint_mask(rgb: np.ndarray, y0: int, x0: int, mask: np.ndarray, color: Color) -> None:
    """Blend the pixels where `mask` is set; mask[0, 0] is pixel (x0, y0)."""
    h, w = mask.shape
    if color.a == 255:
        view = rgb[y0:y0 + h, x0:x0 + w]
        np.copyto(view, _pixel_row((color.r, color.g, color.b), w, np.uint8), where=mask[..., None])
        return
    # Blending whole bands and keeping the masked pixels beats gathering and scattering them.
    for top in range(0, h, _BAND_ROWS):
        view = rgb[y0 + top:y0 + min(top + _BAND_ROWS, h), x0:x0 + w]
        np.copyto(view, _blended(view, color), where=mask[top:top + _BAND_ROWS, :, None], casting="unsafe")


def _paint_points(rgb: np.ndarray, ys: np.ndarray, xs: np.ndarray, color: Color) -> None:
    """Blend distinct on-canvas points."""
    if color.a == 255:
        rgb[ys, xs] = (color.r, color.g, color.b)
    else:
        rgb[ys, xs] = _blended(rgb[ys, xs], color)


def _clip_block(rgb: np.ndarray, x: int, y: int, width: int, height: int, color: Color) -> None:
    h, w = rgb.shape[:2]
    x0, x1 = max(x, 0), min(x + width, w)
    y0, y1 = max(y, 0), min(y + height, h)
    if x0 < x1 and y0 < y1:
        _paint_block(rgb, y0, y1, x0, x1, color)


def _draw_fill(rgb: np.ndarray, op: Fill) -> None:
    _paint_block(rgb, 0, rgb.shape[0], 0, rgb.shape[1], op.color)


def _draw_set(rgb: np.ndarray, op: SetPixel) -> None:
    _clip_block(rgb, op.x, op.y, 1, 1, op.color)


def _draw_rect(rgb: np.ndarray, op: Rect) -> None:
    if op.fill or op.width <= 2 or op.height <= 2:
        _clip_block(rgb, op.x, op.y, op.width, op.height, op.color)
        return
    # Four disjoint strips, so corners are blended once.
    right, bottom = op.x + op.width - 1, op.y + op.height - 1
    _clip_block(rgb, op.x, op.y, op.width, 1, op.color)
    _clip_block(rgb, op.x, bottom, op.width, 1, op.color)
    _clip_block(rgb, op.x, op.y + 1, 1, op.height - 2, op.color)
    _clip_block(rgb, right, op.y + 1, 1, op.height - 2, op.color)


def _divround(n: np.ndarray, d: int) -> np.ndarray:
    if d < 0:
        n, d = -n, -d
    return (2 * n + d) // (2 * d)


def _draw_line(rgb: np.ndarray, op: Line) -> None:
    h, w = rgb.shape[:2]
    dx, dy = op.x2 - op.x1, op.y2 - op.y1
    if dx == 0 and dy == 0:
        _clip_block(rgb, op.x1, op.y1, 1, 1, op.color)
        return
    if abs(dx) >= abs(dy):
        lo, hi = max(min(op.x1, op.x2), 0), min(max(op.x1, op.x2), w - 1)
        if lo > hi:
            return
        xs = np.arange(lo, hi + 1, dtype=np.int64)
        ys = op.y1 + _divround((xs - op.x1) * dy, dx)
        keep = (ys >= 0) & (ys < h)
    else:
        lo, hi = max(min(op.y1, op.y2), 0), min(max(op.y1, op.y2), h - 1)
        if lo > hi:
            return
        ys = np.arange(lo, hi + 1, dtype=np.int64)
        xs = op.x1 + _divround((ys - op.y1) * dx, dy)
        keep = (xs >= 0) & (xs < w)
    if keep.any():
        _paint_points(rgb, ys[keep], xs[keep], op.color)


def _draw_circle(rgb: np.ndarray, op: Circle) -> None:
    h, w = rgb.shape[:2]
    r = op.r
    x0, x1 = max(op.cx - r, 0), min(op.cx + r + 1, w)
    y0, y1 = max(op.cy - r, 0), min(op.cy + r + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    ddx = (np.arange(x0, x1, dtype=np.int32) - op.cx) ** 2
    ddy = (np.arange(y0, y1, dtype=np.int32) - op.cy) ** 2
    # ddx + ddy <= k*k + k, rearranged so only one full-size comparison is built per bound.
    mask = ddx[None, :] <= (r * r + r - ddy)[:, None]
    if not op.fill and r >= 1:
        mask &= ddx[None, :] > ((r - 1) * (r - 1) + (r - 1) - ddy)[:, None]
    _paint_mask(rgb, y0, x0, mask, op.color)


def _draw_text(rgb: np.ndarray, op: WriteText) -> None:
    h, w = rgb.shape[:2]
    s = op.scale
    advance = CELL * s
    x0, x1 = max(op.x, 0), min(op.x + len(op.text) * advance, w)
    y0, y1 = max(op.y, 0), min(op.y + advance, h)
    if x0 >= x1 or y0 >= y1:
        return
    rel_x = np.arange(x0, x1) - op.x
    glyphs = np.array([glyph_index(ch) for ch in op.text], dtype=np.intp)
    columns = (rel_x % advance) // s
    rows = (np.arange(y0, y1) - op.y) // s
    mask = font_bits()[glyphs[rel_x // advance][None, :], rows[:, None], columns[None, :]]
    _paint_mask(rgb, y0, x0, mask, op.color)


_DRAW = {Fill: _draw_fill, SetPixel: _draw_set, Rect: _draw_rect, Line: _draw_line,
         Circle: _draw_circle, WriteText: _draw_text}


def _first_visible_op(ops: tuple[Op, ...]) -> int:
    """Index of the last opaque FILL: it overwrites everything painted before it."""
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if isinstance(op, Fill) and op.color.a == 255:
            return i
    return 0


def render(program: PixelProgram) -> np.ndarray:
    """Rasterise a validated program into an H x W x 4 uint8 RGBA array (alpha 255)."""
    h, w = program.canvas.height, program.canvas.width
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    for op in program.ops[_first_visible_op(program.ops):]:
        if op.color.a:
            _DRAW[type(op)](rgb, op)
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., :3] = rgb
    out[..., 3] = 255
    return out


def covers(op: Op, px: int, py: int) -> bool:
    """Whether `op` covers the point (px, py), written as literally as the spec states it."""
    if isinstance(op, Fill):
        return True
    if isinstance(op, SetPixel):
        return (px, py) == (op.x, op.y)
    if isinstance(op, Rect):
        if not (op.x <= px < op.x + op.width and op.y <= py < op.y + op.height):
            return False
        return op.fill or px in (op.x, op.x + op.width - 1) or py in (op.y, op.y + op.height - 1)
    if isinstance(op, Line):
        dx, dy = op.x2 - op.x1, op.y2 - op.y1
        if dx == 0 and dy == 0:
            return (px, py) == (op.x1, op.y1)
        if abs(dx) >= abs(dy):
            return (min(op.x1, op.x2) <= px <= max(op.x1, op.x2)
                    and py == op.y1 + _divround_int((px - op.x1) * dy, dx))
        return (min(op.y1, op.y2) <= py <= max(op.y1, op.y2)
                and px == op.x1 + _divround_int((py - op.y1) * dx, dy))
    if isinstance(op, Circle):
        def inside(k: int) -> bool:
            return k >= 0 and (px - op.cx) ** 2 + (py - op.cy) ** 2 <= k * k + k
        return inside(op.r) and (op.fill or not inside(op.r - 1))
    if isinstance(op, WriteText):
        advance = CELL * op.scale
        if not (op.y <= py < op.y + advance and op.x <= px < op.x + len(op.text) * advance):
            return False
        i = (px - op.x) // advance
        column = (px - (op.x + i * advance)) // op.scale
        row = (py - op.y) // op.scale
        return bool(font_bits()[glyph_index(op.text[i]), row, column])
    raise TypeError(f"not an op: {op!r}")


def _divround_int(n: int, d: int) -> int:
    if d < 0:
        n, d = -n, -d
    return (2 * n + d) // (2 * d)


def _bounds(op: Op, w: int, h: int) -> tuple[int, int, int, int]:
    """A box [x0, x1) x [y0, y1) on the canvas that contains every covered pixel."""
    if isinstance(op, SetPixel):
        box = (op.x, op.x + 1, op.y, op.y + 1)
    elif isinstance(op, Rect):
        box = (op.x, op.x + op.width, op.y, op.y + op.height)
    elif isinstance(op, Line):
        box = (min(op.x1, op.x2), max(op.x1, op.x2) + 1, min(op.y1, op.y2), max(op.y1, op.y2) + 1)
    elif isinstance(op, Circle):
        box = (op.cx - op.r, op.cx + op.r + 1, op.cy - op.r, op.cy + op.r + 1)
    elif isinstance(op, WriteText):
        advance = CELL * op.scale
        box = (op.x, op.x + len(op.text) * advance, op.y, op.y + advance)
    else:
        box = (0, w, 0, h)
    return max(box[0], 0), min(box[1], w), max(box[2], 0), min(box[3], h)


_MARK = Color(255, 255, 255)


def footprint(op: Op, scratch: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The canvas pixels `op` paints, whatever its colour: its clipped box (x0, x1, y0, y1) and a
    bool mask over that box. `scratch` is an all-zero H x W x 3 uint8 canvas, left all-zero, so one
    serves every op of a program (the render report asks this of each op)."""
    h, w = scratch.shape[:2]
    x0, x1, y0, y1 = _bounds(op, w, h)
    if x0 >= x1 or y0 >= y1:
        return (x0, x1, y0, y1), np.zeros((0, 0), dtype=bool)
    _DRAW[type(op)](scratch, replace(op, color=_MARK))
    region = scratch[y0:y1, x0:x1]
    mask = region[..., 0] > 0
    region[...] = 0
    return (x0, x1, y0, y1), mask


def render_reference(program: PixelProgram) -> np.ndarray:
    """Pure-Python renderer: every pixel of each op's clipped box, tested with `covers`."""
    w, h = program.canvas.width, program.canvas.height
    pixels = [[[0, 0, 0] for _ in range(w)] for _ in range(h)]
    for op in program.ops:
        c = op.color
        x0, x1, y0, y1 = _bounds(op, w, h)
        for py in range(y0, y1):
            row = pixels[py]
            for px in range(x0, x1):
                if covers(op, px, py):
                    row[px] = [(s * c.a + d * (255 - c.a) + 127) // 255
                               for s, d in zip((c.r, c.g, c.b), row[px])]
    out = np.full((h, w, 4), 255, dtype=np.uint8)
    out[..., :3] = np.array(pixels, dtype=np.uint8).reshape(h, w, 3)
    return out


def save_png(image: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write an RGBA array as PNG, each pixel enlarged to a `scale` x `scale` block."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = image.shape[:2]
    if max(h, w) * scale > MAX_PNG_SIDE:
        raise ValueError(f"{w}x{h} at scale {scale} exceeds {MAX_PNG_SIDE} pixels per side")
    if scale > 1:
        image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(image), mode="RGBA").save(path, format="PNG")
    logger.debug("wrote %s (%dx%d, scale %d)", path, w, h, scale)
    return path


def ascii_preview(image: np.ndarray, max_width: int = 80, max_height: int = 40) -> str:
    """Luminance-ramp text picture of an RGBA array, at most max_width x max_height characters.

    A character cell is twice as tall as wide, so a block of cw x 2cw pixels
    becomes one character (fewer rows when max_height is the tighter bound).
    """
    if max_width < 1 or max_height < 1:
        raise ValueError("max_width and max_height must be >= 1")
    h, w = image.shape[:2]
    cw = max(1, math.ceil(w / max_width))
    ch = 2 * cw
    if math.ceil(h / ch) > max_height:
        ch = math.ceil(h / max_height)
        cw = max(cw, math.ceil(ch / 2))
    rgb = image[..., :3].astype(np.int64)
    lum = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]) // 1000
    row_starts, col_starts = np.arange(0, h, ch), np.arange(0, w, cw)
    sums = np.add.reduceat(np.add.reduceat(lum, row_starts, axis=0), col_starts, axis=1)
    heights = np.diff(np.append(row_starts, h))
    widths = np.diff(np.append(col_starts, w))
    means = sums // (heights[:, None] * widths[None, :])
    levels = means * len(ASCII_RAMP) // 256
    return "\n".join("".join(ASCII_RAMP[v] for v in row).rstrip() for row in levels)
