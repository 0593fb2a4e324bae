"""tlog: a verifiable AI-usage transparency log."""

__version__ = "0.1.0"
