"""Deterministic pixel-program generator shared by the CPU and GPU benchmarks.

`mixed_program(width, height, n_ops, seed)` returns a valid program (a
JSON-ready dict): an opaque background FILL, then a seeded mix of every op,
about a third of them translucent, some reaching past the canvas edges so
clipping is exercised. The same arguments always give the same program.
"""

from __future__ import annotations

import random
from typing import Any

_TEXT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,:;!?-+*#@"
_WEIGHTS = {"RECT": 30, "LINE": 25, "CIRCLE": 20, "SET": 12, "WRITE_TEXT": 12, "FILL": 1}


def mixed_program(width: int, height: int, n_ops: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    margin_x, margin_y = max(1, width // 8), max(1, height // 8)

    def x() -> int:
        return rng.randint(-margin_x, width + margin_x)

    def y() -> int:
        return rng.randint(-margin_y, height + margin_y)

    def color() -> list[int]:
        rgb = [rng.randint(0, 255) for _ in range(3)]
        return rgb + [rng.randint(1, 254)] if rng.random() < 0.35 else rgb

    names, weights = zip(*_WEIGHTS.items())
    ops: list[dict[str, Any]] = [{"op": "FILL", "color": [16, 16, 32]}]
    for _ in range(n_ops - 1):
        kind = rng.choices(names, weights)[0]
        if kind == "RECT":
            op = {"op": "RECT", "x": x(), "y": y(), "width": rng.randint(1, max(1, width // 4)),
                  "height": rng.randint(1, max(1, height // 4)), "fill": rng.random() < 0.6}
        elif kind == "LINE":
            op = {"op": "LINE", "x1": x(), "y1": y(), "x2": x(), "y2": y()}
        elif kind == "CIRCLE":
            op = {"op": "CIRCLE", "cx": x(), "cy": y(), "r": rng.randint(0, max(1, min(width, height) // 8)),
                  "fill": rng.random() < 0.6}
        elif kind == "SET":
            op = {"op": "SET", "x": x(), "y": y()}
        elif kind == "WRITE_TEXT":
            text = "".join(rng.choice(_TEXT_CHARS) for _ in range(rng.randint(1, 16)))
            op = {"op": "WRITE_TEXT", "x": x(), "y": y(), "text": text, "scale": rng.randint(1, 3)}
        else:
            # A translucent full-canvas wash now and then; opaque ones would hide the work before them.
            op = {"op": "FILL", "color": [rng.randint(0, 255) for _ in range(3)] + [rng.randint(8, 64)]}
        op.setdefault("color", color())
        ops.append(op)
    return {"kind": "pixel_program", "version": 1, "name": f"mixed_{width}x{height}_{n_ops}_s{seed}",
            "canvas": {"width": width, "height": height}, "ops": ops,
            "metadata": {"description": f"benchmark program, seed {seed}"}}
