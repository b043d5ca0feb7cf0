"""Makes the repository's `benchmarks/` scripts importable by their tests (not part of the package)."""

import pathlib
import sys

_BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
if str(_BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(_BENCHMARKS))
