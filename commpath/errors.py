"""Errors that end a command with exit code 2 and one line naming the file and the reason."""


class CommpathError(Exception):
    """Bad usage or unreadable input: shown as one line, exit code 2."""


class InputError(CommpathError):
    """A file that cannot be used: ``str()`` is ``"<file>: <reason>"``."""

    def __init__(self, file, reason: str):
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")

    def __reduce__(self):           # pickled as made (a decoding process hands its error back)
        return type(self), (self.file, self.reason)
