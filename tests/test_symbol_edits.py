"""The `symbol` edit format: the model writes each changed definition out whole and it replaces the
file's definition of that name (issue 11: small models copy whole functions; let that be the edit).
Real files on disk, the real parser (tree-sitter), the same `apply_answer` the engine uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from auto_gvpie.edits import EditRefused, apply_answer, edit_format_instructions
from auto_gvpie.excerpt import render
from auto_gvpie.codeindex import parse_symbols

MODULE = '''"""Text helpers."""

import re

WORDS = re.compile(r"\\w+")


def count(text):
    """Number of words."""
    return len(text.split(" "))


class Pager:
    def __init__(self, items, size):
        self.items, self.size = items, size

    def page(self, n):
        """Items of page n (from 1)."""
        return self.items[n * self.size:(n + 1) * self.size]

    def count(self):
        return len(self.items) // self.size


def shout(text):
    return text.upper()
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "text.py").write_text(MODULE)
    return tmp_path


def answer(code: str, path: str = "text.py", fence: str = "```") -> str:
    return f"{path}\n{fence}python\n{code}{fence}\n"


def test_a_function_written_out_whole_replaces_that_function_only(repo):
    applied = apply_answer(repo, answer('def count(text):\n    """Number of words."""\n    return len(text.split())\n'),
                           "symbol")
    assert applied.files == ["text.py"] and applied.format == "symbol"
    assert (repo / "text.py").read_text() == MODULE.replace('len(text.split(" "))', "len(text.split())")


def test_a_method_written_at_column_zero_goes_back_into_its_class(repo):
    code = 'def page(self, n):\n    """Items of page n (from 1)."""\n    return self.items[(n - 1) * self.size:n * self.size]\n'
    apply_answer(repo, answer(code), "symbol")
    after = (repo / "text.py").read_text()
    assert "        return self.items[(n - 1) * self.size:n * self.size]\n" in after
    assert after.count("def count(") == 2 and "return len(text.split(\" \"))" in after  # nothing else moved


def test_of_two_definitions_with_one_name_the_one_most_like_the_rewrite_is_replaced(repo):
    apply_answer(repo, answer("def count(self):\n    return -(-len(self.items) // self.size)\n"), "symbol")
    after = (repo / "text.py").read_text()
    assert "        return -(-len(self.items) // self.size)\n" in after
    assert 'return len(text.split(" "))' in after  # the module-level count() is untouched


def test_several_definitions_in_one_block_are_each_applied(repo):
    code = ('def count(text):\n    """Number of words."""\n    return len(WORDS.findall(text))\n\n\n'
            'def shout(text):\n    return text.upper() + "!"\n')
    apply_answer(repo, answer(code), "symbol")
    after = (repo / "text.py").read_text()
    assert "return len(WORDS.findall(text))" in after and 'return text.upper() + "!"' in after
    assert after.count("def shout") == 1


def test_echoed_excerpt_markers_outside_a_definition_are_ignored(repo):
    code = ('...  # lines 1-7 not shown (def count(text))\n\n\ndef shout(text):\n    return text.lower()\n\n'
            '...  # lines 30-40 not shown\n')
    apply_answer(repo, answer(code), "symbol")
    assert (repo / "text.py").read_text() == MODULE.replace("return text.upper()", "return text.lower()")


def test_a_class_holding_a_not_shown_marker_gives_only_its_methods_written_out_whole(repo):
    code = "class Pager:\n    ...  # lines 14-15 not shown (def __init__(self, items, size))\n\n    def count(self):\n        return 0\n"
    apply_answer(repo, answer(code), "symbol")
    # Pager.count is replaced (by its qualified name, not the module's count); __init__ and page are kept.
    assert (repo / "text.py").read_text() == MODULE.replace("return len(self.items) // self.size", "return 0")


def test_a_definition_holding_a_not_shown_marker_and_nothing_whole_is_refused(repo):
    code = "class Pager:\n    size = 3\n    ...  # lines 14-22 not shown (def __init__(self, items, size))\n"
    with pytest.raises(EditRefused, match="marked 'not shown'"):
        apply_answer(repo, answer(code), "symbol")
    code = "def count(text):\n    ...  # lines 9-10 not shown\n    return 0\n"
    with pytest.raises(EditRefused, match="marked 'not shown'"):
        apply_answer(repo, answer(code), "symbol")
    assert (repo / "text.py").read_text() == MODULE


def test_an_unknown_name_is_refused_naming_the_definitions_the_file_has(repo):
    with pytest.raises(EditRefused, match=r"defines no wordcount; write out a definition the file has \(count, Pager"):
        apply_answer(repo, answer("def wordcount(text):\n    return 0\n"), "symbol")


def test_an_unchanged_definition_changes_nothing_and_is_refused(repo):
    with pytest.raises(EditRefused, match="changes nothing"):
        apply_answer(repo, answer("def shout(text):\n    return text.upper()\n"), "symbol")


def test_an_answer_cut_off_inside_its_block_is_refused(repo):
    with pytest.raises(EditRefused, match="not closed"):
        apply_answer(repo, "text.py\n```python\ndef shout(text):\n    return text.upper() + '!'\n", "symbol")
    assert (repo / "text.py").read_text() == MODULE


def test_a_docstring_with_fences_inside_is_kept_whole(repo):
    module = 'def example():\n    """Use it like this:\n\n    ```python\n    example()\n    ```\n    """\n    return 1\n'
    (repo / "doc.py").write_text(module)
    code = 'def example():\n    """Use it like this:\n\n    ```python\n    example()\n    ```\n    """\n    return 2\n'
    apply_answer(repo, answer(code, "doc.py", fence="````"), "symbol")
    assert (repo / "doc.py").read_text() == module.replace("return 1", "return 2")


def test_crlf_files_keep_their_line_endings(repo):
    (repo / "win.py").write_bytes(b"def a():\r\n    return 1\r\n\r\n\r\ndef b():\r\n    return 2\r\n")
    apply_answer(repo, answer("def b():\n    return 3\n", "win.py"), "symbol")
    assert (repo / "win.py").read_bytes() == b"def a():\r\n    return 1\r\n\r\n\r\ndef b():\r\n    return 3\r\n"


def test_search_replace_blocks_are_still_accepted_in_this_format(repo):
    sr = 'text.py\n```\n<<<<<<< SEARCH\nWORDS = re.compile(r"\\w+")\n=======\nWORDS = re.compile(r"\\S+")\n>>>>>>> REPLACE\n```\n'
    apply_answer(repo, sr, "symbol")
    assert 'WORDS = re.compile(r"\\S+")' in (repo / "text.py").read_text()


def test_a_function_shown_in_an_excerpt_and_written_back_changed_applies_to_the_real_file(repo):
    big = MODULE + "".join(f"\n\ndef helper_{n}(x):\n    return x + {n}\n" for n in range(300))
    (repo / "text.py").write_text(big)
    focus = [s for s in parse_symbols("text.py", big.encode()) if s.qualname == "Pager.page"]
    shown = render("text.py", big, focus, 1500).text
    assert "def helper_150" not in shown and "    def page(self, n):" in shown
    page = shown[shown.index("    def page(self, n):"):].split("\n\n")[0] + "\n"  # as the model copies it
    apply_answer(repo, answer(page.replace("n * self.size:(n + 1)", "(n - 1) * self.size:n")), "symbol")
    assert (repo / "text.py").read_text() == big.replace("n * self.size:(n + 1)", "(n - 1) * self.size:n")


def test_the_instructions_ask_for_whole_definitions_with_the_files_fence():
    text = edit_format_instructions("symbol", "text.py", MODULE, fence="````")
    assert "written out whole" in text and "never the whole file" in text and "````python" in text


def test_an_edit_that_leaves_valid_python_unable_to_compile_is_refused_with_the_line(repo):
    code = 'def shout(text):\n    return text.upper()\n        + "!"\n'
    with pytest.raises(EditRefused, match=r"invalid Python \(IndentationError: unexpected indent, line 27"):
        apply_answer(repo, answer(code), "symbol")
    assert (repo / "text.py").read_text() == MODULE
    (repo / "old.py").write_text("print 'python 2'\n")  # not valid before: not judged
    apply_answer(repo, "old.py\n```\n<<<<<<< SEARCH\nprint 'python 2'\n=======\nprint 'still 2'\n>>>>>>> REPLACE\n```\n")
    assert (repo / "old.py").read_text() == "print 'still 2'\n"
    broken_whole = 'def shout(text):\n    return text.upper()\n        + "!"\n'
    apply_answer(repo, f"text.py\n```python\n{broken_whole}```\n", "whole")  # a whole file is written as sent
    assert (repo / "text.py").read_text() == broken_whole
