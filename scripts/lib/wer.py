"""Word error rate of a transcript against a script's text, as scripts/bench-asr and
scripts/score-calls measure it: lower case, apostrophes dropped, other punctuation a
word break, each digit of a number spelled as its own word ("412" -> "four one two"),
so numbers that the TTS read out and Whisper wrote as digits count as errors in both
scripts alike. Word-level Levenshtein distance (substitutions, insertions, deletions).
"""
import re

_ONES = "zero one two three four five six seven eight nine".split()


def words(text):
    """The words of `text`, normalised as the module says."""
    out = []
    for w in re.findall(r"[a-z0-9]+", text.lower().replace("'", "")):
        if w.isdigit():
            out.extend(_ONES[int(c)] for c in w)
        else:
            out.append(w)
    return out


def errors(reference, hypothesis):
    """(word errors, reference words) of `hypothesis` against `reference` (strings)."""
    r, h = words(reference), words(hypothesis)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)
