class ArcDataError(ValueError):
    """Malformed input or misuse: the message names the file, task and what is wrong.

    The CLI prints it as one line on stderr and exits with code 2.
    """
