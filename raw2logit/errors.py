"""The one exception type for bad input: its message is one sentence naming what is wrong.

``InputError`` subclasses ``ValueError``. The command line prints its message alone (no
traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback) and exits with a non-zero status.
"""


class InputError(ValueError):
    """Bad user input (a file, a config key or value, a tensor): the message says what and why."""
