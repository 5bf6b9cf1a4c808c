"""Fixtures for template tests (shared with the other folder through tests/template_kit.py)."""

from template_kit import hub

__all__ = ["hub"]
