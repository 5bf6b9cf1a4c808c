"""ihub: an open-source integration hub."""

__version__ = "0.1.0"
