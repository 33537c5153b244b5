"""Barricade's test kit provides the real downstream and the real proxy.

The package directory goes on the path, so the tests also run from a
checkout without ``pip install -e .``.
"""

import sys
from pathlib import Path

from barricade.testing import make_proxy, make_sink, sink  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
