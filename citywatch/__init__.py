"""The ``citywatch`` command and the all-in-one runner that wires the packages together."""

__version__ = "0.1.0"
