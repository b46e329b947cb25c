"""Errors that carry their CLI exit code and a hint on what to try next."""


class Qwen35Error(Exception):
    """A failure the user can act on; `hint` says what to try next."""

    exit_code = 1

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and the hint as one line for stderr."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


class InputError(Qwen35Error):
    """Bad usage or bad input (unknown model, malformed config, bad counts): exit 2."""

    exit_code = 2


class NoFeasiblePlan(Qwen35Error):
    """Nothing fits the hardware: exit 3."""

    exit_code = 3
