"""The ``pattern:`` of a string input or a ``wait`` field, evaluated in linear time.

A definition's author writes the pattern; an applicant (or anyone who reaches the API) writes
the text it is matched against. Python's ``re`` backtracks, so a pattern such as ``^(a+)+$``
takes time exponential in the text's length. Patterns are therefore compiled and matched by
RE2 (``google-re2``), whose matching time is linear in the text. RE2 does not support what
needs backtracking (back-references like ``\\1``, look-ahead and look-behind): a definition
whose pattern RE2 cannot compile is refused when it is validated, with RE2's reason.

Domain code: imports no ``temporalio``.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

# The longest pattern a definition may carry, in characters.
MAX_PATTERN = 1_000

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the reason is raised (PatternError), not written to stderr


class PatternError(ValueError):
    """A pattern RE2 cannot compile, or one too long; the message says why."""


@functools.lru_cache(maxsize=512)
def compiled(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (cached); raises :class:`PatternError`."""
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"`pattern` is longer than {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as err:
        reason = err.args[0] if err.args else "not a valid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(
            f"`pattern` is not one renkei can match in linear time (RE2 syntax: no"
            f" back-references, look-ahead or look-behind): {reason}"
        ) from None


def full_match(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern``, in time linear in ``len(text)``."""
    return compiled(pattern).fullmatch(text) is not None
