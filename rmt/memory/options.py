"""Option: one setting of the recurrent memory, as ``RMTConfig`` takes it and ``rmt train`` shows it.

Torch-free (the CLI builds flags from these without importing the model side); the memory kinds
declare theirs in their modules (``MemoryKind.options``), the core ones are in config.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rmt.errors import UsageError


@dataclass(frozen=True)
class Option:
    """One setting of a memory kind (or of every kind: ``rmt.memory.config.CORE_OPTIONS``), as
    ``RMTConfig`` takes it and ``rmt train`` shows it (``--name-with-dashes``).

    ``type`` is ``int``, ``float``, ``str`` or ``bool``; ``minimum`` (inclusive) and ``choices``
    say which values mean something; ``help`` is the flag's one line. ``exclusive`` (what the
    option is, e.g. "a write rule"): another kind must leave it at its default, where it would
    silently not apply. ``none_allowed``: None is a value (the default comes from elsewhere).
    ``encoder_only``: no flag in ``rmt train``, which trains causal LMs."""

    name: str
    default: object
    type: type
    help: str
    minimum: float | None = None
    choices: tuple = ()
    exclusive: str = ""
    none_allowed: bool = False
    encoder_only: bool = False

    def check(self, value):
        """``value`` if it means something for this option (an int is a float), else a ValueError
        naming the option, the value and what is allowed. Strict about types: text that reads as
        a number is for ``from_text`` (config files) to turn into one first."""
        if value is None and self.none_allowed:
            return None
        kind = self.type
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{self.name} must be a finite number, got {value!r}")
            value = float(value)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{self.name} must be {self.describe()}, got {value!r}")
        elif not isinstance(value, kind):
            raise UsageError(f"{self.name} must be {self.describe()}, got {value!r}")
        if self.choices and value not in self.choices:
            raise UsageError(f"unknown {self.name} {value!r}; allowed: {', '.join(map(str, self.choices))}")
        if self.minimum is not None and value < self.minimum:
            raise UsageError(f"{self.name} must be {self.describe()}, got {value!r}")
        return value

    def describe(self) -> str:
        """What the option takes, e.g. "an integer >= 1"."""
        if self.type is float:
            what = f">= {self.minimum:g}" if self.minimum is not None else "a finite number"
        else:
            what = {int: "an integer", bool: "true or false", str: "a string"}[self.type]
            what += f" >= {self.minimum:g}" if self.minimum is not None else ""
        return what + (" or None" if self.none_allowed else "")


def from_text(value, kind: type):
    """A value read from a config file, as the declared type ``kind`` wants it: a number written
    as text becomes that number (PyYAML reads ``3e-4`` and ``1e-2`` as strings), an integral number
    for an int is that int. Anything else comes back unchanged, for the check to name it."""
    if isinstance(value, bool) or kind not in (int, float):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        if kind is int:
            return int(number) if number.is_integer() else value
        return number
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
