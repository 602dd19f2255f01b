"""The paper's language rule written from its description in Python, as the reference the tests
compare `saeflow classify` and the miner with: Python's own re and str.strip() give the exact
semantics (Unicode whitespace for \\s and strip, `$`, the first of tied maxima, negative indices).

Per example: the token at the first highest activation, stripped, is English iff it matches
^[a-zA-Z\\s"'(),.\\-]+$; ASCII digits only take the previous token's language (index -1 is the last
token, as in Python); anything else is Japanese. Python's recursion ends in IndexError when every
token is digits: here that example's language is "none". A feature is en (ja) if strictly more than
90% of all its examples are, else mixed.
"""
import re

EN = re.compile(r"^[a-zA-Z\s\"\'\(\),\.\-]+$")
DIGITS = re.compile(r"^[0-9]+$")


def token_language(example, idx):
    token = example[idx][0].strip()
    if EN.match(token):
        return "en"
    if DIGITS.match(token):
        return token_language(example, idx - 1)
    return "ja"


def example_language(example):
    peak = max(range(len(example)), key=lambda i: example[i][1])
    try:
        return token_language(example, peak)
    except IndexError:
        return "none"


def feature_language(token_act, share=0.9):
    counts = {"en": 0, "ja": 0, "none": 0}
    for example in token_act:
        counts[example_language(example)] += 1
    n = len(token_act)
    verdict = "unknown" if n == 0 else "en" if counts["en"] / n > share else "ja" if counts["ja"] / n > share else "mixed"
    return counts, verdict
