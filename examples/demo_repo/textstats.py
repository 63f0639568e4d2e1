"""Small text helpers for the Auto-GVPIE demo: one of them has a bug for the worker to fix."""


def word_count(text):
    """Number of words separated by whitespace."""
    return len(text.split(" "))


def is_palindrome(text):
    """True when text reads the same backwards, ignoring case and spaces."""
    cleaned = text.replace(" ", "").lower()
    return cleaned == cleaned[::-1]
