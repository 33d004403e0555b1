"""secstream: the real-time layer of SEC-TESTER."""
