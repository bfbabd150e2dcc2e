"""Errors that end a command with exit code 2 and one line naming the file and the reason."""


class CommpathError(Exception):
    """Bad usage or unreadable input: shown as one line, exit code 2."""


class InputError(CommpathError):
    """A file that cannot be used: ``str()`` is ``"<file>: <reason>"``."""

    def __init__(self, file, reason: str):
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")
