"""Run the whole flightcheck graph without a Dagger engine (local runtimes).

    python pipeline.py [--config FILE] [--runtime docker|process] [--report-dir DIR]
                       [--memory LIMIT] [--service-env KEY=VALUE ...]

Same options and exit codes as ``flightcheck ci``; works from a checkout without installing
flightcheck as long as its dependencies are importable.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from flightcheck.cli import main  # noqa: E402 - after the path tweak on purpose

if __name__ == "__main__":
    main(["ci", *sys.argv[1:]])
