"""flowrun: run real-time integration flows on one machine."""

__version__ = "0.1.0"
