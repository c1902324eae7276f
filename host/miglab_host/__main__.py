"""Entry point: ``python3 -m miglab_host ...``."""

import sys

from miglab_host.cli import main

if __name__ == "__main__":
    sys.exit(main())
