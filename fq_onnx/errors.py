"""The one exception type users see: a problem with their input, named in plain words."""


class FqOnnxError(Exception):
    """A user-facing error (bad file, bad option, unsupported model); the CLI exits with 1."""
