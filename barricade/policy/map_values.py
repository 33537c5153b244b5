"""The access map's number-valued tags, checked once when the map loads.

``Rate-Connect:``, ``Concurrent-Connect:``, ``Grey-Connect:``/``Grey-To:``,
``Null-Rate-To:``, ``Msg-Limit-*`` and ``Length-*`` entries are read by their
checks at lookup time, and a value that does not parse is ignored there (the
lookup finds nothing).  Reporting it there would repeat the line for every
session; the map reports every such line once per load instead.
"""

from __future__ import annotations

from collections.abc import Callable


def _integer(value: str) -> None:
    int(value.split()[0])


def _rate(value: str) -> None:
    from barricade.policy.message_limits import parse_message_rate

    parse_message_rate(value)


def _size(value: str) -> None:
    from barricade.policy.message_limits import parse_size

    parse_size(value)


#: tag (without the colon) -> a parser that raises ValueError or IndexError.
NUMERIC_TAGS: dict[str, Callable[[str], None]] = {
    "rate-connect": _integer, "concurrent-connect": _integer,
    "grey-connect": _integer, "grey-to": _integer, "null-rate-to": _integer,
    "msg-limit-connect": _rate, "msg-limit-from": _rate, "msg-limit-to": _rate,
    "length-connect": _size, "length-from": _size, "length-to": _size,
}


def value_problems(entries: dict[str, str], lines: dict[str, int], source: str) -> list[str]:
    """``source:line: key: value 'x' is not a valid tag: value`` for each bad entry, by line."""
    out = []
    for key, value in entries.items():
        check = NUMERIC_TAGS.get(key.partition(":")[0])
        if check is None:
            continue
        try:
            check(value)
        except (ValueError, IndexError):
            line = lines.get(key, 0)
            out.append((line, f"{source}:{line or '?'}: {key}: {value!r} is not a valid "
                              f"{key.partition(':')[0]}: value"))
    return [text for _, text in sorted(out)]
