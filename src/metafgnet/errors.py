"""The base of every error whose message tells the user what is wrong and how to fix it.

Stages print such errors as one block without a traceback (:mod:`metafgnet.stages.failure`);
anything else is a bug and keeps its traceback.
"""


# The exit status of a process stopped by a UserError (every rank of a torchrun job alike).
EXIT_CODE = 2
# Set by the package's torchrun launcher (metafgnet.distributed.run) for its ranks: they leave
# the message of a UserError to it instead of printing.
QUIET_LAUNCH_ENV = "METAFGNET_QUIET_LAUNCH"


class Interrupted(RuntimeError):
    """Work stopped on a signal after saving what it had; ``exit_code`` (128 + the signal
    number) is what the process should exit with. Stages catch this base, so a stage that never
    trains need not import the training code that raises it."""

    exit_code = 1


class UserError(Exception):
    """A problem with the user's params, data, environment or saved state, explained in the
    message (what, where, the fix)."""
