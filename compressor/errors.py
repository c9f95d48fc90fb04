"""The one exception type the CLI turns into a one-line message and exit code 2."""

import difflib


class CompressorError(Exception):
    """A problem with the user's input: the message says what is wrong and how to fix it."""


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
