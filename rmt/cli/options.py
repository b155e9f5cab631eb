"""The CLI's shared vocabulary: option spellings and value parsers used by several commands.

One name per idea across commands: ``--tasks`` (comma list), ``--lengths``, ``--samples``, ``--seed``,
``--n-facts N|LO,HI``. Older spellings (``--task``, ``--facts LO-HI``) still work as hidden aliases.
"""

from __future__ import annotations

from rmt.errors import UsageError


def split_list(value: str, what: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; one-line error when nothing is left."""
    items = [x.strip() for x in str(value).split(",") if x.strip()]
    if not items:
        raise UsageError(f"{what} must be a comma-separated list, got {value!r}")
    return items


def parse_n_facts(spec: str | None, flag: str = "--n-facts"):
    """Facts per story: ``"6"`` -> 6, ``"2,10"`` (or the old ``"2-10"``) -> (2, 10), None -> None."""
    if spec is None:
        return None
    text = str(spec).strip()
    try:
        parts = [int(x) for x in text.replace("-", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise UsageError(f"{flag} {spec!r} must be a number (e.g. 6) or a range LO,HI (e.g. 2,10)")


def pick_alias(value, alias, name: str, alias_name: str, default=None):
    """The value of an option that also has an old (hidden) spelling; both given is an error."""
    if alias is not None and value is not None and alias != value:
        raise UsageError(f"give {name} once ({alias_name} is its old spelling)")
    chosen = value if value is not None else alias
    return default if chosen is None else chosen
