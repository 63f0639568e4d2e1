"""The agent benchmark's suite: small, self-contained tasks in Python and Rust.

Each task is a tiny repository (files), the task as a user would queue it, and tests
that fail before the change and pass after it. `bench/agent_bench.py` runs them;
`tests/test_agent_tasks.py` checks that every test really fails on the starting files
and passes on the reference solution, so a "solved" count means something.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PY_TEST = "python3 -m unittest -q test_main"
RUST_TEST = "cargo test -q --offline"
CARGO_TOML = '[package]\nname = "kata"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'


@dataclass(frozen=True)
class BenchTask:
    name: str
    title: str
    description: str
    files: dict[str, str]  # the repository before the change
    solution: dict[str, str]  # reference versions of the changed files
    inputs: tuple[str, ...]
    tests: tuple[str, ...]
    language: str = "python"
    extra: dict = field(default_factory=dict)


def py(name: str, title: str, description: str, before: str, after: str, test: str) -> BenchTask:
    return BenchTask(name, title, description, {"main.py": before, "test_main.py": test}, {"main.py": after},
                     ("main.py",), (PY_TEST,))


def rust(name: str, title: str, description: str, before: str, after: str, test: str) -> BenchTask:
    files = {"Cargo.toml": CARGO_TOML, "src/lib.rs": before, "tests/it.rs": test, ".gitignore": "target/\n"}
    return BenchTask(name, title, description, files, {"src/lib.rs": after}, ("src/lib.rs",), (RUST_TEST,), "rust")


def unit(*cases: str) -> str:
    body = "\n".join(f"    def test_{i}(self):\n        {case}\n" for i, case in enumerate(cases))
    return f"import unittest\n\nfrom main import *\n\n\nclass T(unittest.TestCase):\n{body}\n\nif __name__ == '__main__':\n    unittest.main()\n"


def rtests(*cases: str) -> str:
    return "use kata::*;\n\n" + "\n".join(f"#[test]\nfn case_{i}() {{\n    {case}\n}}\n" for i, case in enumerate(cases))


SUITE: list[BenchTask] = [
    py("fizzbuzz", "Fix fizzbuzz in main.py", "fizzbuzz(n) must return 'FizzBuzz' for multiples of 15.",
       "def fizzbuzz(n):\n    if n % 3 == 0:\n        return 'Fizz'\n    if n % 5 == 0:\n        return 'Buzz'\n    if n % 15 == 0:\n        return 'FizzBuzz'\n    return str(n)\n",
       "def fizzbuzz(n):\n    if n % 15 == 0:\n        return 'FizzBuzz'\n    if n % 3 == 0:\n        return 'Fizz'\n    if n % 5 == 0:\n        return 'Buzz'\n    return str(n)\n",
       unit("self.assertEqual(fizzbuzz(15), 'FizzBuzz')", "self.assertEqual(fizzbuzz(9), 'Fizz')",
            "self.assertEqual(fizzbuzz(10), 'Buzz')", "self.assertEqual(fizzbuzz(7), '7')")),
    py("clamp", "Implement clamp in main.py", "clamp(x, lo, hi) returns x limited to the range lo..hi.",
       "def clamp(x, lo, hi):\n    raise NotImplementedError\n",
       "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
       unit("self.assertEqual(clamp(5, 0, 3), 3)", "self.assertEqual(clamp(-2, 0, 3), 0)", "self.assertEqual(clamp(2, 0, 3), 2)")),
    py("mean-empty", "Make mean() return 0.0 for an empty list", "mean([]) currently raises ZeroDivisionError; it must return 0.0.",
       "def mean(values):\n    return sum(values) / len(values)\n",
       "def mean(values):\n    if not values:\n        return 0.0\n    return sum(values) / len(values)\n",
       unit("self.assertEqual(mean([]), 0.0)", "self.assertEqual(mean([1, 2, 3]), 2)")),
    py("leap-year", "Fix is_leap_year in main.py", "Years divisible by 100 are not leap years unless divisible by 400.",
       "def is_leap_year(year):\n    return year % 4 == 0\n",
       "def is_leap_year(year):\n    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n",
       unit("self.assertTrue(is_leap_year(2024))", "self.assertFalse(is_leap_year(1900))",
            "self.assertTrue(is_leap_year(2000))", "self.assertFalse(is_leap_year(2023))")),
    py("reverse-words", "Implement reverse_words in main.py", "reverse_words('a b c') returns 'c b a' (words separated by single spaces).",
       "def reverse_words(text):\n    return text\n",
       "def reverse_words(text):\n    return ' '.join(reversed(text.split(' ')))\n",
       unit("self.assertEqual(reverse_words('a b c'), 'c b a')", "self.assertEqual(reverse_words('hello'), 'hello')")),
    py("vowels", "Fix count_vowels to count uppercase vowels too", "count_vowels('AEiou') must be 5.",
       "def count_vowels(text):\n    return sum(1 for ch in text if ch in 'aeiou')\n",
       "def count_vowels(text):\n    return sum(1 for ch in text.lower() if ch in 'aeiou')\n",
       unit("self.assertEqual(count_vowels('AEiou'), 5)", "self.assertEqual(count_vowels('xyz'), 0)")),
    py("stack-peek", "Add a peek() method to Stack in main.py", "peek() returns the top item without removing it; on an empty stack it raises IndexError.",
       "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n",
       "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n\n    def peek(self):\n        return self.items[-1]\n",
       unit("s = Stack(); s.push(1); s.push(2); self.assertEqual(s.peek(), 2); self.assertEqual(s.pop(), 2)",
            "self.assertRaises(IndexError, Stack().peek)")),
    py("fahrenheit", "Fix celsius_to_fahrenheit in main.py", "The formula is F = C * 9 / 5 + 32.",
       "def celsius_to_fahrenheit(c):\n    return c * 5 / 9 + 32\n",
       "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32\n",
       unit("self.assertEqual(celsius_to_fahrenheit(100), 212)", "self.assertEqual(celsius_to_fahrenheit(0), 32)")),
    py("dedupe", "Implement dedupe in main.py", "dedupe(items) removes repeated items, keeping the first occurrence and the original order.",
       "def dedupe(items):\n    return list(set(items))\n",
       "def dedupe(items):\n    seen = set()\n    out = []\n    for item in items:\n        if item not in seen:\n            seen.add(item)\n            out.append(item)\n    return out\n",
       unit("self.assertEqual(dedupe([3, 1, 3, 2, 1]), [3, 1, 2])", "self.assertEqual(dedupe([]), [])")),
    py("roman", "Implement roman_to_int in main.py", "roman_to_int('XIV') == 14; subtractive pairs like IV, IX, XL, XC, CD, CM count as 4, 9, 40, 90, 400, 900.",
       "def roman_to_int(text):\n    values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n    return sum(values[ch] for ch in text)\n",
       "def roman_to_int(text):\n    values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n    total = 0\n    for i, ch in enumerate(text):\n        v = values[ch]\n        if i + 1 < len(text) and values[text[i + 1]] > v:\n            total -= v\n        else:\n            total += v\n    return total\n",
       unit("self.assertEqual(roman_to_int('XIV'), 14)", "self.assertEqual(roman_to_int('MCMXCIV'), 1994)", "self.assertEqual(roman_to_int('III'), 3)")),
    py("slugify", "Implement slugify in main.py", "slugify('Hello, World!') == 'hello-world': lower case, runs of non-alphanumeric characters become one '-', no '-' at either end.",
       "def slugify(text):\n    return text.lower()\n",
       "import re\n\n\ndef slugify(text):\n    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')\n",
       unit("self.assertEqual(slugify('Hello, World!'), 'hello-world')", "self.assertEqual(slugify('  A  b '), 'a-b')")),
    rust("rust-max", "Fix max_of in src/lib.rs", "max_of(&[]) must return None instead of panicking; otherwise Some(largest).",
         "pub fn max_of(values: &[i32]) -> Option<i32> {\n    let mut best = values[0];\n    for &v in values {\n        if v > best {\n            best = v;\n        }\n    }\n    Some(best)\n}\n",
         "pub fn max_of(values: &[i32]) -> Option<i32> {\n    values.iter().copied().max()\n}\n",
         rtests("assert_eq!(max_of(&[]), None);", "assert_eq!(max_of(&[3, 9, 2]), Some(9));")),
    rust("rust-even", "Fix is_even in src/lib.rs", "is_even must be true for even numbers, including negative ones.",
         "pub fn is_even(n: i64) -> bool {\n    n % 2 == 1\n}\n",
         "pub fn is_even(n: i64) -> bool {\n    n % 2 == 0\n}\n",
         rtests("assert!(is_even(4));", "assert!(!is_even(7));", "assert!(is_even(-2));")),
    rust("rust-words", "Implement word_count in src/lib.rs", "word_count counts words separated by any whitespace.",
         "pub fn word_count(text: &str) -> usize {\n    text.len()\n}\n",
         "pub fn word_count(text: &str) -> usize {\n    text.split_whitespace().count()\n}\n",
         rtests("assert_eq!(word_count(\"one two  three\"), 3);", "assert_eq!(word_count(\"\"), 0);")),
    rust("rust-factorial", "Implement factorial in src/lib.rs", "factorial(n) returns n! as u64, with factorial(0) == 1.",
         "pub fn factorial(n: u64) -> u64 {\n    n\n}\n",
         "pub fn factorial(n: u64) -> u64 {\n    (1..=n).product()\n}\n",
         rtests("assert_eq!(factorial(0), 1);", "assert_eq!(factorial(5), 120);")),
    rust("rust-reverse", "Implement reverse_string in src/lib.rs", "reverse_string returns the characters of s in reverse order.",
         "pub fn reverse_string(s: &str) -> String {\n    s.to_string()\n}\n",
         "pub fn reverse_string(s: &str) -> String {\n    s.chars().rev().collect()\n}\n",
         rtests("assert_eq!(reverse_string(\"abc\"), \"cba\");", "assert_eq!(reverse_string(\"\"), \"\");")),
]
