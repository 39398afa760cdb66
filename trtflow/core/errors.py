"""The one exception type trtflow raises for bad input."""


class TrtflowError(Exception):
    """Bad input or an unusable artifact: one line that says what is wrong and how to fix it.

    Library code raises it; the CLI and the Snakemake scripts turn it into a non-zero exit with
    the message as the last line of the log.
    """

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} — fix: {fix}" if fix else what)


#: What the OS (and TensorFlow's C++ file writers, which pass the OS's words on) says when a
#: write finds the disk or the user's quota full.
DISK_FULL_WORDS = ("No space left on device", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """A write failed because the disk (or quota) is full: ``OSError`` ENOSPC/EDQUOT, or
    TensorFlow's ``ResourceExhaustedError`` saying so (not its out-of-memory one)."""
    import errno

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return type(exc).__name__ == "ResourceExhaustedError" and any(
        w in str(exc) for w in DISK_FULL_WORDS
    )
