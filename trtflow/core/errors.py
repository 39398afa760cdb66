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
