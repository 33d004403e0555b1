"""secstream: the real-time layer of SEC-TESTER."""

from secstream.publisher import Publisher, TestRun

__all__ = ["Publisher", "TestRun"]
__version__ = "0.1.0"
