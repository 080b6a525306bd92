"""``python -m voice_server.cli``: the ``soma`` command (as the test suite and benchmarks start it)."""

import sys

from voice_server.cli import main

sys.exit(main())
