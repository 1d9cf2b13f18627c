"""Stage bodies of the DVC pipeline: one function per stage, called by ``pipeline/<stage>.py``."""
