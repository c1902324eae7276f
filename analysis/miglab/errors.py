"""Errors shared by the whole package."""


class MiglabError(Exception):
    """An error a user can act on; the CLI prints it without a traceback."""


class ConfigError(MiglabError):
    """Bad input, reported with the offending key or file before any host is touched."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
