"""Entry point: ``python3 -m miglab_runner ...``."""

import sys

from miglab_runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
