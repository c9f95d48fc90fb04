"""The one exception type the CLI turns into a one-line message, and the exit codes it uses."""

import difflib

# Exit codes of `compress`, documented in README.md for scripts that call it.
EXIT_FAILED = 1  # an unexpected failure inside a run (a bug: it comes with its traceback)
EXIT_INPUT = 2  # bad input: a recipe, data, checkpoint or run folder the message names
EXIT_INCOMPLETE = 3  # it ran, but something asked for was not made (e.g. an engine where TensorRT is absent)
EXIT_USAGE = 64  # the command line itself: an unknown option, a missing argument (sysexits' EX_USAGE)
EXIT_INTERRUPTED = 130  # Ctrl-C: finished work is kept


class CompressorError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


MAX_MESSAGE = 600  # characters of an error line; the rest of a long quoted value is noise


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """One line of at most `limit` characters: a message may quote a stranger's file, and a
    value in it may be megabytes long."""
    line = " ".join(message.split())
    return line if len(line) <= limit else f"{line[:limit]}… ({len(line) - limit} more characters)"


def excerpt(value, limit: int = 80) -> str:
    """A value as an error message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class Problems(CompressorError):
    """Every problem found in one input at once (a recipe `compress validate` checks): one line each."""

    def __init__(self, lines: list[str]):
        self.lines = list(dict.fromkeys(lines))  # a problem two checks both notice is said once
        super().__init__("\n".join(self.lines))
