"""The one exception type for bad input: its message is one sentence naming what is wrong.

``InputError`` subclasses ``ValueError``. The command line prints its message alone (no
traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback) and exits with a non-zero status.
"""


class InputError(ValueError):
    """Bad user input (a file, a config key or value, a tensor): the message says what and why."""


class NonFiniteError(InputError):
    """A loss, a parameter or a view became NaN or infinite: the run stops and stores nothing for the
    unit of work in flight (usually a learning rate too large, or a θ that makes no image)."""


def check_finite_loss(loss, what: str, epoch: int, step: int, hint: str) -> None:
    """Raise ``NonFiniteError`` when a scalar loss tensor is NaN or infinite."""
    import math

    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteError(f"The {what} became {value} at epoch {epoch + 1}, step {step + 1}; {hint}.")
