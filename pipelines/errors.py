"""The one error type for bad input or configuration: the CLI prints its one-line message and exits with code 2."""


class InputError(ValueError):
    """Bad input data, a bad config or an unusable path; the message names the table/key, the problem and the count."""
