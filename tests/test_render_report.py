"""The render report (issue 12): what a valid pixel program's picture gets visibly wrong, found
without a model, said so that the model can act on it, and fed back by the engine like a refusal.
Real programs through the real validator and CPU renderer; the engine part through the real CLI
with a loopback OpenAI-compatible server."""

from __future__ import annotations

import json

from auto_gvpie.pixels.program import parse_program
from auto_gvpie.pixels.render import render
from auto_gvpie.pixels.report import COLOUR_WORDS, render_report

from conftest import run_cli, write_tasks
from llm_server import LLMServer

DEMO = ("Draw a 64x64 boot screen icon\nA 64x64 pixel program: dark blue background, a green rectangle outline near "
        "the edges, a yellow filled circle in the middle and the text GVPIE in white below it.")


def program(ops: list[dict], palette: dict | None = None, size: int = 64) -> dict:
    return {"kind": "pixel_program", "version": 1, "canvas": {"width": size, "height": size},
            "palette": palette or {}, "ops": ops}


GOOD = program([{"op": "FILL", "color": "bg"},
                {"op": "RECT", "x": 2, "y": 2, "width": 60, "height": 60, "fill": False, "color": "green"},
                {"op": "CIRCLE", "cx": 32, "cy": 26, "r": 14, "color": "yellow"},
                {"op": "WRITE_TEXT", "x": 12, "y": 46, "text": "GVPIE", "color": "white"}],
               {"bg": [0, 0, 100], "green": [0, 200, 0], "yellow": [255, 220, 0], "white": [255, 255, 255]})

# What the bundled model once sent for the demo (issue 12): black background, a circle over the
# whole canvas and the rectangle, the text at y = 60; plus a palette colour it never used.
BAD = program([{"op": "FILL", "color": "bg"},
               {"op": "RECT", "x": 8, "y": 8, "width": 48, "height": 48, "fill": False, "color": "green"},
               {"op": "CIRCLE", "cx": 32, "cy": 32, "r": 32, "color": "yellow"},
               {"op": "WRITE_TEXT", "x": 12, "y": 60, "text": "GVPIE", "color": "white"}],
              {"bg": [0, 0, 0], "green": [0, 255, 0], "yellow": [255, 255, 0], "white": [255, 255, 255],
               "blue": [0, 0, 139]})


def report(doc: dict, text: str = DEMO) -> list[str]:
    parsed = parse_program(doc)
    return [str(p) for p in render_report(parsed, render(parsed), text)]


def test_a_picture_that_does_what_the_demo_asks_has_no_problems():
    assert report(GOOD) == []


def test_each_defect_of_the_bad_demo_picture_is_reported_with_what_to_change():
    problems = report(BAD)
    assert len(problems) == 5, problems
    colour, cut, covered, across, unused = problems  # what the task asked for first
    assert cut.startswith('ops[3]: WRITE_TEXT "GVPIE" is cut off by the canvas edge') and "set y to 57 or less" in cut
    assert covered.startswith("ops[1]: RECT is mostly covered by later ops (ops[2] CIRCLE): only 12 of its 188 "
                              "pixels show")
    assert across.startswith('ops[3]: WRITE_TEXT "GVPIE" lies across the edge of a shape')
    assert unused.startswith("palette.blue: the palette colour 'blue' is never used")
    assert colour.startswith("picture: the task asks for dark blue, but no pixel of the picture is dark blue")
    assert "[0,0,0] black" in colour


def test_a_shape_wholly_covered_by_a_later_one_is_reported():
    doc = program([{"op": "FILL", "color": [0, 0, 0]},
                   {"op": "CIRCLE", "cx": 20, "cy": 20, "r": 5, "color": [255, 0, 0]},
                   {"op": "RECT", "x": 0, "y": 0, "width": 40, "height": 40, "color": [0, 255, 0]}])
    assert report(doc, "") == ["ops[1]: CIRCLE is wholly covered by later ops (ops[2] RECT), so it does not show; "
                               "move or shrink what covers it, or draw it after them"]


def test_off_canvas_transparent_and_mostly_hidden_ops_are_reported():
    doc = program([{"op": "FILL", "color": [0, 0, 0]},
                   {"op": "RECT", "x": 100, "y": 0, "width": 5, "height": 5, "color": [255, 0, 0]},
                   {"op": "SET", "x": 1, "y": 1, "color": [255, 0, 0, 0]},
                   {"op": "RECT", "x": 10, "y": 10, "width": 20, "height": 20, "color": [255, 0, 0]},
                   {"op": "RECT", "x": 11, "y": 10, "width": 19, "height": 20, "color": [0, 255, 0]}])
    problems = report(doc, "a square")
    assert problems[0] == ("ops[1]: RECT is wholly off the 64x64 canvas: nothing of it is drawn; "
                           "use coordinates inside it")
    assert problems[1] == "ops[2]: SET has alpha 0 and draws nothing"
    assert problems[2].startswith("ops[3]: RECT is mostly covered by later ops (ops[4] RECT): only 20 of its 400 "
                                  "pixels show")
    assert len(problems) == 3  # the background FILL is mostly covered, as a background is


def test_translucent_ops_hide_nothing_and_colours_the_task_rules_out_are_not_asked_for():
    doc = program([{"op": "FILL", "color": [255, 255, 255]},
                   {"op": "RECT", "x": 0, "y": 0, "width": 64, "height": 64, "color": [0, 0, 255, 128]}])
    assert report(doc, "a blue tint, no red anywhere") == []
    assert report(doc, "a red square") == [
        "picture: the task asks for red, but no pixel of the picture is red (its colours: [127,127,255] blue); "
        "paint what should be red with a red colour such as [255, 0, 0]"]


def test_text_too_wide_for_the_canvas_says_so():
    doc = program([{"op": "WRITE_TEXT", "x": 0, "y": 0, "text": "WIDE", "color": [255, 255, 255], "scale": 3}],
                  size=32)
    (problem,) = report(doc, "")
    assert "larger than the 32x32 canvas: use fewer characters or a smaller scale" in problem


def test_the_engine_feeds_the_report_back_and_accepts_the_corrected_picture(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    write_tasks(home, [{"id": "demo-boot-screen", "kind": "pixel", "title": DEMO.splitlines()[0],
                        "description": DEMO.splitlines()[1]}])
    answers = [f"```json\n{json.dumps(BAD)}\n```", f"```json\n{json.dumps(GOOD)}\n```"]
    with LLMServer(answers) as server:
        out = run_cli("--home", str(home), "--llm-url", server.url, "--no-memory", "--once", "--json")
    assert out.returncode == 0, out.stderr
    (task,) = json.loads(out.stdout)["tasks"]
    assert task["status"] == "done" and task["attempts"] == 2
    second = "\n".join(m["content"] for m in server.requests[1]["messages"] if m["role"] == "user")
    assert "the picture does not do what the task asks yet" in second
    assert "is cut off by the canvas edge" in second and "no pixel of the picture is dark blue" in second
    first = json.loads((home / "artifacts" / "demo-boot-screen.attempt-1.json").read_text())
    assert first["outcome"] == "picture_rejected"
    assert json.loads((home / "artifacts" / "demo-boot-screen.json").read_text())["ops"] == GOOD["ops"]


def test_text_wholly_below_the_canvas_is_reported_once_with_where_it_would_fit():
    # Seen from the bundled model on the demo: the text at y = 64 on a 64-pixel canvas.
    doc = program([{"op": "FILL", "color": [0, 0, 0]},
                   {"op": "WRITE_TEXT", "x": 0, "y": 64, "text": "GVPIE", "color": [255, 255, 255]}])
    (problem,) = report(doc, "")
    assert problem.startswith('ops[1]: WRITE_TEXT "GVPIE" is wholly outside the 64x64 canvas, so nothing of it shows')
    assert "set y to 57 or less" in problem


def test_the_colour_each_fix_suggests_is_one_the_check_accepts():
    for word, (test, example) in COLOUR_WORDS.items():
        assert test(tuple(example)), word


def test_text_across_the_edge_of_a_shape_is_reported():
    # The bundled model's second demo picture: a circle filling the canvas, the text half on it.
    # A few of its pixels also lie on the outline along the edge: a third, small share.
    doc = program([{"op": "FILL", "color": "bg"},
                   {"op": "RECT", "x": 0, "y": 0, "width": 64, "height": 64, "fill": False, "color": "green"},
                   {"op": "CIRCLE", "cx": 32, "cy": 32, "r": 32, "color": "yellow"},
                   {"op": "WRITE_TEXT", "x": 0, "y": 57, "text": "GVPIE", "color": "white"}],
                  {"bg": [0, 0, 139], "green": [0, 200, 0], "yellow": [255, 255, 0], "white": [255, 255, 255]})
    (problem,) = report(doc, "")
    assert problem.startswith('ops[3]: WRITE_TEXT "GVPIE" lies across the edge of a shape (')
    assert "on ops[0] FILL and " in problem and "on ops[2] CIRCLE" in problem
    # No room below or above the circle: the fix says how small it must be, in numbers.
    assert problem.endswith("make ops[2] CIRCLE smaller so that it ends above row 55 (cy + r <= 54, e.g. r = 22), "
                            "and set the text's y to 56")
    inside = program([{"op": "FILL", "color": [0, 0, 139]},
                      {"op": "RECT", "x": 0, "y": 40, "width": 64, "height": 24, "color": [90, 90, 90]},
                      {"op": "WRITE_TEXT", "x": 4, "y": 48, "text": "OK", "color": [255, 255, 255]}])
    assert report(inside, "") == []  # wholly on one shape reads fine
