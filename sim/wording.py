"""Wording shared by every layer's user-facing text (CLI lines, notes, report footers, plot
titles); in ``sim`` so ``dynosim_gym``, ``agents``, ``dynosim`` and the scripts can all use it
(``tests/test_layout.py``)."""
from __future__ import annotations


def plural(n: int, noun: str, *, many: str | None = None, fmt: str = "") -> str:
    """``n`` and ``noun``, the noun plural unless ``n`` is 1: ``plural(1, "env runner")`` ->
    ``"1 env runner"``, ``plural(3, "repeat")`` -> ``"3 repeats"``.

    Args:
        n: the count.
        noun: the singular noun phrase (its last word is pluralised by adding ``s``).
        many: the plural when adding ``s`` is wrong (``"policies"``).
        fmt: format spec for ``n`` (``","`` for thousands separators).
    """
    return f"{n:{fmt}} {noun if n == 1 else (many or noun + 's')}"


def exact(x: float | int) -> str:
    """``x`` written exactly: the shortest decimal that reads back as the same float
    (``repr``), without a trailing ``.0``: ``exact(129.9)`` -> ``"129.9"``, ``exact(130.0)``
    -> ``"130"``. For messages that compare two numbers (``%g``/``.0f`` can round 129.9 to
    130 and make "130 is longer than 130" read false)."""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x) if isinstance(x, float) else str(x)
