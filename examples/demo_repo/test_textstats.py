import unittest

from textstats import is_palindrome, word_count


class TextStatsTest(unittest.TestCase):
    def test_word_count_plain(self):
        self.assertEqual(word_count("one two three"), 3)

    def test_word_count_extra_spaces_and_newlines(self):
        self.assertEqual(word_count("  one   two\nthree  "), 3)

    def test_word_count_empty(self):
        self.assertEqual(word_count(""), 0)

    def test_palindrome(self):
        self.assertTrue(is_palindrome("Never odd or even"))


if __name__ == "__main__":
    unittest.main()
