"""Errors the CLI turns into one-line messages and documented exit codes.

Exit codes: 0 success, 1 unexpected failure, 2 bad input (file, row, column or config key),
3 output locked by another job.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3


class PipelineError(Exception):
    """Base class: an error with a one-line message and an exit code."""

    exit_code = EXIT_FAILURE


class BadInput(PipelineError):
    """Input data or configuration is wrong; the message names the file, row, column or key."""

    exit_code = EXIT_BAD_INPUT


class Locked(PipelineError):
    """Another live job holds the lock on the same output."""

    exit_code = EXIT_LOCKED


class ResumeFailed(PipelineError):
    """A checkpoint could not be restored in full: the job stops instead of training on from partial state."""


class Diverged(PipelineError):
    """The training loss became NaN or infinite: training stops; the last good checkpoint is kept."""


class NonFinite(PipelineError):
    """A run's results hold NaN or infinity: it is never published."""
