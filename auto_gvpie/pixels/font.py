"""The one bitmap font table (font8x8.txt), shared with the GPU runner.

Format and bit order are specified in docs/pixel_programs.md ("Font").
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FONT_PATH = Path(__file__).with_name("font8x8.txt")
FIRST_CODE_POINT = 0x20
LAST_CODE_POINT = 0x7E
FALLBACK_CODE_POINT = ord("?")
CELL = 8


class FontError(ValueError):
    """The font file breaks its format; names the file and line."""


def parse_font(text: str, source: str = "font8x8.txt") -> np.ndarray:
    """Parse the font table into a (95, 8) uint8 array of row bytes, index = code point - 0x20."""
    rows: list[list[int]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        tokens = line.split()
        if len(tokens) != 9:
            raise FontError(f"{where}: expected 9 tokens (0xCP and 8 row bytes), got {len(tokens)}")
        cp_token = tokens[0]
        if not cp_token.lower().startswith("0x"):
            raise FontError(f"{where}: code point {cp_token!r} must start with 0x")
        try:
            cp = int(cp_token[2:], 16)
        except ValueError:
            raise FontError(f"{where}: bad code point {cp_token!r}") from None
        expected = FIRST_CODE_POINT + len(rows)
        if cp != expected:
            raise FontError(f"{where}: expected code point 0x{expected:02X}, got 0x{cp:02X}")
        row_bytes = []
        for token in tokens[1:]:
            if len(token) != 2 or any(ch not in "0123456789abcdefABCDEF" for ch in token):
                raise FontError(f"{where}: row byte {token!r} must be exactly two hex digits")
            row_bytes.append(int(token, 16))
        rows.append(row_bytes)
    count = LAST_CODE_POINT - FIRST_CODE_POINT + 1
    if len(rows) != count:
        raise FontError(f"{source}: expected {count} glyphs (0x20..0x7E), found {len(rows)}")
    return np.array(rows, dtype=np.uint8)


@functools.cache
def font_rows() -> np.ndarray:
    """The glyph rows of the shared font, loaded once."""
    return parse_font(FONT_PATH.read_text(encoding="utf-8"), source=str(FONT_PATH))


@functools.cache
def font_bits() -> np.ndarray:
    """(95, 8, 8) bool array: [glyph, row, column], column 0 = bit 0x80 (leftmost)."""
    return np.unpackbits(font_rows()[:, :, None], axis=2).astype(bool)


def glyph_index(ch: str) -> int:
    """Index into the font of the glyph that draws one code point (unknown ones draw '?')."""
    cp = ord(ch)
    if not FIRST_CODE_POINT <= cp <= LAST_CODE_POINT:
        cp = FALLBACK_CODE_POINT
    return cp - FIRST_CODE_POINT
