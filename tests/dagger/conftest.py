"""Fixtures of the Dagger module's tests. Helpers live in guard_support / ci_support /
dagger_recording (import those, never conftest).

The module's package (ci/src/flightcheck_ci) is what Dagger installs in its runtime container;
here it is imported from the checkout, against the dagger-io in .venv.
"""

import sys
from pathlib import Path

from guard_support import starter  # noqa: F401 - re-exported as a fixture
from harness_support import harness  # noqa: F401 - re-exported as a fixture

CI_SRC = str(Path(__file__).resolve().parents[2] / "ci" / "src")
if CI_SRC not in sys.path:
    sys.path.insert(0, CI_SRC)
