"""`python -m auto_gvpie.pixels`: export the pixel program JSON Schema, or validate a program file.

Exit codes: 0 printed / valid; 2 unreadable or invalid (the message names the JSON path).
"""

from __future__ import annotations

import argparse
import json
import sys

from auto_gvpie.pixels.program import MAX_OPS, ValidationError, json_schema, parse_program


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auto_gvpie.pixels",
                                     description="Export the pixel program JSON Schema or validate a program file.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--schema", action="store_true", help="print the JSON Schema")
    group.add_argument("file", nargs="?", help="a pixel program to validate")
    parser.add_argument("--max-ops", type=int, default=MAX_OPS, help="ops bound in the exported schema")
    args = parser.parse_args(argv)
    if args.schema:
        print(json.dumps(json_schema(max_ops=args.max_ops), indent=2))
        return 0
    try:
        with open(args.file, "rb") as fh:
            program = parse_program(fh.read())
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: valid ({program.canvas.width}x{program.canvas.height}, {len(program.ops)} ops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
