"""Tests for auto_gvpie.excerpt: focused views of big files, and edits against them that apply to the real file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_repo

from auto_gvpie.codeindex import Symbol, parse_symbols
from auto_gvpie.edits import apply_answer
from auto_gvpie.excerpt import apply_symbol_answer, render

FAULTY = '''def ordinal(n):
    """The ordinal of n: 1st, 2nd, 3rd, 4th ... 11th, 12th, 13th."""
    suffixes = {1: "st", 2: "nd", 3: "rd"}
    return f"{n}{suffixes.get(n % 10, 'th')}"
'''


def big_module(functions: int = 60, lines: int = 1500) -> str:
    """About `lines` lines: imports, a constant, `functions` helpers, a class with methods, and ordinal()."""
    out = ['"""Numbers, words and their helpers."""', "", "import math", "import os", "from typing import Any", "",
           "LIMIT = 10", "", ""]
    body = (lines - 40) // functions - 5
    for i in range(functions):
        if i == functions // 2:
            out += FAULTY.splitlines() + ["", ""]
            out += ["class Inflector:", '    """Words for numbers."""', "", "    def __init__(self, lang):",
                    "        self.lang = lang", "", "    @property", "    def name(self):",
                    "        return 'inflector-' + self.lang", "", "    def plural(self, word):",
                    "        return word + 's'", "", ""]
        out += [f"def helper_{i}(x, y={i}):", f'    """Helper number {i}."""']
        out += [f"    x = x + {j} * y  # step {j} of helper {i}" for j in range(body)]
        out += ["    return x", "", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def symbol(text: str, qualname: str, path: str = "numbers.py") -> Symbol:
    return next(s for s in parse_symbols(path, text.encode()) if s.qualname == qualname)


def lines_of(text: str, s: Symbol) -> str:
    return "".join(text.splitlines(keepends=True)[s.start_line - 1: s.end_line])


def test_a_small_file_is_shown_whole() -> None:
    text = "def add(a, b):\n    return a - b\n"
    excerpt = render("calc.py", text, [symbol(text, "add", "calc.py")], 1000)
    assert excerpt.whole and excerpt.text == text and excerpt.shown == [(1, 2)]


def test_big_file_shows_the_focused_function_whole_and_every_other_signature() -> None:
    text = big_module()
    assert 1450 <= text.count("\n") <= 1550
    focus = symbol(text, "ordinal")
    excerpt = render("numbers.py", text, [focus], 6000)
    assert not excerpt.whole
    assert len(excerpt.text) < len(text) / 8 and excerpt.text.count("\n") < text.count("\n") / 10
    assert FAULTY in excerpt.text  # verbatim, every line, no line-number prefixes
    assert any(lo <= focus.start_line and focus.end_line <= hi for lo, hi in excerpt.shown)
    assert "import math\nimport os\nfrom typing import Any\n" in excerpt.text  # the top of the file
    for other in parse_symbols("numbers.py", text.encode()):
        if other.qualname != "ordinal":
            assert other.signature.rstrip(":") in excerpt.text, other.qualname
    assert "...  # lines 10-" in excerpt.text and "not shown (def helper_0(x, y=0))" in excerpt.text
    # A method is listed under its class, indented like it.
    assert "class Inflector:\n" in excerpt.text and "    ...  # lines " in excerpt.text


def test_every_shown_range_is_verbatim_and_no_symbol_is_cut() -> None:
    text = big_module()
    lines = text.splitlines(keepends=True)
    symbols = parse_symbols("numbers.py", text.encode())
    excerpt = render("numbers.py", text, [symbol(text, "helper_3"), symbol(text, "Inflector.plural")], 5000)
    shown = {n for lo, hi in excerpt.shown for n in range(lo, hi + 1)}
    for lo, hi in excerpt.shown:
        assert "".join(lines[lo - 1: hi]) in excerpt.text
    for s in symbols:
        inside = {n for n in range(s.start_line, s.end_line + 1)} & shown
        if s.kind == "class":
            continue  # a class shows its own line(s) around a focused method
        assert not inside or inside == set(range(s.start_line, s.end_line + 1)), s.qualname
    assert lines_of(text, symbol(text, "Inflector.plural")) in excerpt.text
    assert "class Inflector:\n" in excerpt.text


def test_focus_over_budget_keeps_the_top_ranked_whole_and_lists_the_rest() -> None:
    text = big_module()
    first, second = symbol(text, "helper_40"), symbol(text, "helper_41")
    # Room for the first, not for the second as well.
    excerpt = render("numbers.py", text, [first, second], len(lines_of(text, first)) + len(lines_of(text, second)) // 2)
    assert lines_of(text, first) in excerpt.text
    assert lines_of(text, second) not in excerpt.text
    assert "helper_41" in excerpt.text and "helper_39" in excerpt.text  # named by markers
    # Even a budget smaller than the top symbol shows it whole; the others collapse into few markers.
    tiny = render("numbers.py", text, [first], 200)
    assert lines_of(text, first) in tiny.text
    assert tiny.text.count("\n") < 40 and "definitions: helper_0, helper_1" in tiny.text


def test_search_replace_written_against_the_excerpt_applies_to_the_real_file(tmp_path: Path) -> None:
    text = big_module()
    repo = make_repo(tmp_path / "repo", {"numbers.py": text})
    excerpt = render("numbers.py", text, [symbol(text, "ordinal")], 6000)
    # What a model does: copy lines from the excerpt into SEARCH and change one of them.
    shown = excerpt.text.splitlines()
    start = shown.index("def ordinal(n):")
    search = "\n".join(shown[start: start + 4])
    replace = search.replace("return f\"{n}{suffixes.get(n % 10, 'th')}\"",
                             "if 10 <= n % 100 <= 20:\n        return f\"{n}th\"\n"
                             "    return f\"{n}{suffixes.get(n % 10, 'th')}\"")
    answer = f"numbers.py\n```\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```\n"
    applied = apply_answer(repo, answer, "search_replace", ["numbers.py"])
    assert applied.files == ["numbers.py"]
    fixed = FAULTY.replace("    return f\"{n}{suffixes", "    if 10 <= n % 100 <= 20:\n        return f\"{n}th\"\n"
                                                          "    return f\"{n}{suffixes")
    assert (repo / "numbers.py").read_text() == text.replace(FAULTY, fixed)


def test_a_search_copied_from_a_marker_is_refused_not_misapplied(tmp_path: Path) -> None:
    from auto_gvpie.edits import EditRefused
    text = big_module()
    repo = make_repo(tmp_path / "repo", {"numbers.py": text})
    excerpt = render("numbers.py", text, [symbol(text, "ordinal")], 6000)
    marker = next(line for line in excerpt.text.splitlines() if "not shown (def helper_7" in line)
    answer = f"numbers.py\n<<<<<<< SEARCH\n{marker}\n=======\ndef helper_7(x, y=7):\n    return 0\n>>>>>>> REPLACE\n"
    with pytest.raises(EditRefused):
        apply_answer(repo, answer, "search_replace", ["numbers.py"])
    assert (repo / "numbers.py").read_text() == text


def test_crlf_file_keeps_its_line_endings_in_the_excerpt(tmp_path: Path) -> None:
    text = big_module().replace("\n", "\r\n")
    excerpt = render("numbers.py", text, [symbol(text, "ordinal")], 6000)
    assert "\r\n" in excerpt.text and "\n" not in excerpt.text.replace("\r\n", "")
    assert FAULTY.replace("\n", "\r\n") in excerpt.text


def test_rust_excerpt_uses_rust_comments() -> None:
    fns = "\n".join(f"/// Doc {i}.\npub fn f{i}(x: u32) -> u32 {{\n" + "    let y = x + 1;\n" * 20 + "    y\n}\n"
                    for i in range(20))
    text = "use std::fmt;\n\n" + fns
    excerpt = render("src/lib.rs", text, [symbol(text, "f7", "src/lib.rs")], 3000)
    assert lines_of(text, symbol(text, "f7", "src/lib.rs")) in excerpt.text
    assert "// ... lines 3-" in excerpt.text and "(pub fn f0(x: u32) -> u32)" in excerpt.text
    assert excerpt.text.startswith("use std::fmt;\n")


def test_js_class_method_in_focus_shows_the_class_line_and_its_closing_brace() -> None:
    methods = "".join(f"  m{i}(a) {{\n" + "    a += 1;\n" * 6 + "    return a;\n  }\n\n" for i in range(10))
    text = f"import x from './x';\n\nexport class Pager {{\n{methods}}}\n\nexport function free() {{\n  return 1;\n}}\n"
    m3 = symbol(text, "Pager.m3", "src/pager.js")
    excerpt = render("src/pager.js", text, [m3], 900)
    assert excerpt.text.startswith("import x from './x';\n\nexport class Pager {\n  // ... lines 4-12 not shown (m0(a))\n")
    assert lines_of(text, m3) in excerpt.text
    assert "\n}\n" in excerpt.text and "// ... lines 106-108 not shown (function free())" in excerpt.text


METHODS = '''import os


class Store:
    """Keeps things."""

    def __init__(self):
        self.items = {}

    @staticmethod
    def key(name):
        return name.lower()

    def get(self, name):
        return self.items[name]

    def put(self, name, value):
        self.items[name] = value
'''


def test_apply_symbol_answer_replaces_a_method_exactly_and_reindents_it() -> None:
    get = symbol(METHODS, "Store.get", "store.py")
    # Small models write a method out at column 0.
    new = apply_symbol_answer(METHODS, get, "def get(self, name):\n    return self.items.get(name)\n")
    assert new == METHODS.replace("        return self.items[name]\n", "        return self.items.get(name)\n")
    # Written with its indentation, the same result.
    same = apply_symbol_answer(METHODS, get, "    def get(self, name):\n        return self.items.get(name)\n")
    assert same == new


def test_apply_symbol_answer_keeps_decorators_and_line_endings() -> None:
    text = METHODS.replace("\n", "\r\n")
    key = symbol(text, "Store.key", "store.py")
    assert key.start_line == 10  # the range starts at the decorator
    new = apply_symbol_answer(text, key, "def key(name):\n    return name.casefold()\n")
    assert new == text.replace("name.lower()", "name.casefold()")
    with pytest.raises(ValueError):
        apply_symbol_answer(text, key, "\n\n")
    with pytest.raises(ValueError, match=r"write Store.key out whole, starting with its definition line \(def key\(name\)\)"):
        apply_symbol_answer(text, key, "class Store:\n    def get(self, name):\n        return 1\n")


def test_apply_symbol_answer_on_the_last_line_of_a_file_without_newline() -> None:
    text = METHODS.rstrip("\n")
    put = symbol(text, "Store.put", "store.py")
    new = apply_symbol_answer(text, put, "def put(self, name, value):\n    self.items[name.lower()] = value\n")
    assert new == text.replace("self.items[name] = value", "self.items[name.lower()] = value")


def test_module_level_lines_the_focus_uses_come_before_the_others() -> None:
    helpers = "".join(f"def helper_{i}(x):\n" + "    x += 1\n" * 10 + "    return x\n\n\n" for i in range(30))
    other = "OTHER = [\n" + "".join(f"    {i},\n" for i in range(40)) + "]\n"
    table = "TABLE = {1: 'st', 2: 'nd', 3: 'rd'}\n"
    lookup = "def lookup(n):\n    return TABLE.get(n % 10, 'th')\n"
    text = f"import os\n\n\n{other}\n\n{helpers}{table}\n\n{lookup}"
    focus = [symbol(text, "lookup")]
    everything = render("numbers.py", text, focus, len(text) - 1)
    assert other in everything.text and table in everything.text
    excerpt = render("numbers.py", text, focus, len(everything.text) - 10)
    assert table in excerpt.text and lookup in excerpt.text and "import os\n" in excerpt.text
    assert other not in excerpt.text and "...  # lines 4-45 not shown\n" in excerpt.text
