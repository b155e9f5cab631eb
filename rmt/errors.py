"""The project's one error type for a user's mistake.

``UsageError`` is what every check of user input raises: a bad flag value, a missing or broken
file the user named, a model that cannot be found. The ``rmt`` command prints it as one
``error: ...`` line (exit status 2); any other exception is a bug and shows its traceback
(``rmt --debug`` or ``RMT_DEBUG=1`` shows it for user errors too). It is a ``ValueError``, so code
that catches ``ValueError`` around the Python API keeps working.
"""


class UsageError(ValueError):
    """A user's mistake, said in one line that names the bad value and what is allowed."""
