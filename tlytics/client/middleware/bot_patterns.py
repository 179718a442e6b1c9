"""Many regular expressions as one compiled matcher, for `is_bot`.

The crawler list holds about 1,500 patterns. Python's `re` tries the branches of an
alternation one after another at every position of the text, so one alternation of them all
is slower still than the list's own loop over chunks of 25 (each of which it runs through
`re` for every user agent). Most patterns are plain words, though, or expand to a few (a
`[wW]`, a `(a|b)`, a leading `^`): those go into a trie written as a regex, whose branches
differ by their first character, so each position costs a few character tests. The few
patterns left over (`$`, `\\d`, `.*` inside) are joined as they are. The result matches
exactly when one of the patterns would (`search`, case as written).
"""

from __future__ import annotations

import itertools
import re

# The parser `re` compiles with (private, but the only reader of the syntax `re` accepts).
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
from collections.abc import Iterable
from typing import Any

# A pattern that expands to more words than this stays a regex.
_WORDS_PER_PATTERN_MAX = 32

# A pattern that is a plain word: no metacharacter but an escaped punctuation mark (most of
# the list: "Googlebot\\/", "bingbot"), read without the parser, which costs far more.
_PLAIN_WORD = re.compile(r"(?:[^\\\[\](){}.*+?^$|]|\\[^A-Za-z0-9])+")
_ESCAPE = re.compile(r"\\(.)")

# (anchored at the start, word)
Word = tuple[bool, str]


def _expand(items: Any, depth: int = 0) -> list[Word] | None:
    """The words a parsed pattern matches, each marked when it must start the text; None when
    the pattern is not a small finite set of words."""
    words: list[Word] = [(False, "")]
    for position, (op, argument) in enumerate(items):
        if op is sre_constants.AT and argument is sre_constants.AT_BEGINNING and position == 0:
            choices: list[Word] = [(True, "")]
        elif op is sre_constants.LITERAL:
            choices = [(False, chr(argument))]
        elif op is sre_constants.IN and all(kind is sre_constants.LITERAL for kind, _ in argument):
            choices = [(False, chr(code)) for _, code in argument]
        elif op is sre_constants.SUBPATTERN and depth < 4:
            _, add_flags, del_flags, inner = argument
            if add_flags or del_flags:
                return None
            found = _expand(inner, depth + 1)
            if found is None:
                return None
            choices = found
        elif op is sre_constants.BRANCH and depth < 4:
            choices = []
            for alternative in argument[1]:
                found = _expand(alternative, depth + 1)
                if found is None:
                    return None
                choices.extend(found)
        else:
            return None
        if position > 0 and any(anchored for anchored, _ in choices):
            return None  # an anchor inside: "a(^|b)", never in the list, and not a word
        words = [
            (anchored or more, word + after) for (anchored, word), (more, after) in itertools.product(words, choices)
        ]
        if len(words) > _WORDS_PER_PATTERN_MAX:
            return None
    return words


def _trie_regex(words: Iterable[str]) -> str:
    """A regex matching any of `words`, as a trie: at each character one branch per next
    character. A word that is the start of another is enough on its own (search only asks
    whether one matches), so the longer one is dropped."""
    trie: dict[str, Any] = {}
    for word in sorted(set(words), key=len):
        node = trie
        for character in word:
            if "" in node:
                break  # a shorter word already matches here
            node = node.setdefault(character, {})
        else:
            node.clear()
            node[""] = {}

    def written(node: dict[str, Any]) -> str:
        branches = [re.escape(character) + written(child) for character, child in sorted(node.items()) if character]
        if not branches:
            return ""
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return written(trie)


def one_matcher(patterns: Iterable[str]) -> re.Pattern[str]:
    """One compiled regex whose `search` finds a match exactly when one of `patterns` would."""
    floating: list[str] = []
    anchored: list[str] = []
    leftover: list[str] = []
    for pattern in patterns:
        if _PLAIN_WORD.fullmatch(pattern):
            floating.append(_ESCAPE.sub(r"\1", pattern))
            continue
        parsed = sre_parse.parse(pattern)
        words = None if parsed.state.flags & re.IGNORECASE else _expand(parsed)
        if words is None or any(not word for _, word in words):
            leftover.append(pattern)
            continue
        for at_start, word in words:
            (anchored if at_start else floating).append(word)
    branches = []
    if floating:
        branches.append(_trie_regex(floating))
    if anchored:
        branches.append("^" + _trie_regex(anchored))
    branches.extend(f"(?:{pattern})" for pattern in leftover)
    return re.compile("|".join(branches) if branches else "(?!)")
