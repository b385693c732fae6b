"""``python -m flightcheck.cloudrun.local serve --state-dir DIR``: the emulator in the foreground."""

import sys

from flightcheck.cloudrun.local.server import main

sys.exit(main())
