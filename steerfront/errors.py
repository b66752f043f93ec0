"""The one error type users see: a single line naming what is wrong and where."""


class SteerfrontError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits with 2."""
