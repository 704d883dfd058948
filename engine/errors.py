"""Errors a user can cause and fix.

Library code (shards/, features/, heads/) raises `UserError` with a message that names the
bad value and says what to do; the CLI turns it into one clear line and exit code 1 instead
of a traceback. Programming errors stay ordinary exceptions so they keep their traceback.
"""


class UserError(Exception):
    """Bad input, missing files, wrong options: anything the user can fix."""
