"""Exceptions a user can act on.

Every failure caused by the user's input (a missing or corrupt file, an unsupported format, NaN values, a
band count or scale the model does not take) raises :class:`InputError` with a message that names the
file and the problem. The command-line tools print it as one line ``error: <message>`` and exit with
status 2; nothing else in the package catches it.
"""


class InputError(ValueError):
    """A problem with the user's input, reported as ``error: <message>`` by the CLIs."""
