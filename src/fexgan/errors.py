"""One exception type for mistakes a user can fix; the CLI prints it as a single line."""


class UserError(Exception):
    """A problem with the user's input (path, argument, file). Printed without a traceback."""
