"""Pixel programs: the model and validator, the shared font, the CPU renderer."""

from .program import PixelProgram, ValidationError, json_schema, parse_program
from .render import ascii_preview, render, save_png

__all__ = ["PixelProgram", "ValidationError", "ascii_preview", "json_schema", "parse_program", "render", "save_png"]
