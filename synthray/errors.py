"""Errors that mean "the configuration is wrong", told apart from bugs.

A :class:`ConfigError` is raised for an unknown key or section in a config; the command line
reports it in one line. A plain ``TypeError`` is a programming error and keeps its traceback.
It subclasses ``TypeError`` (what such mistakes were before) and ``ValueError`` (what a bad
value is), so callers catching either keep working.
"""

from __future__ import annotations


class ConfigError(TypeError, ValueError):
    """A config names a key, section or value the code does not know."""
