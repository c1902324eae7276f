"""miglab: a performance lab for Linux page-migration patches."""

__version__ = "0.1.0"
