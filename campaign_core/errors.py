"""The one error type for bad input: a caller's data, arguments or configuration, never a bug of the platform.

Every entry point checks its inputs before it computes anything and raises `InputError` with one line that names
the table, column, key or argument, the problem and how many rows have it. It subclasses `ValueError`, so code
that catches `ValueError` keeps working; the `campaign` command turns it, and only it, into exit code 2 without a
traceback. Any other exception, a `ValueError` from deep inside numpy included, is a bug: exit code 1 with the
traceback.
"""


class InputError(ValueError):
    """Bad input data, arguments or configuration; the message names what is wrong, where, and how often."""
