"""The base of every error whose message tells the user what is wrong and how to fix it.

Stages print such errors as one block without a traceback (:mod:`metafgnet.stages.failure`);
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's params, data, environment or saved state, explained in the
    message (what, where, the fix)."""
