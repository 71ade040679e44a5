"""Errors that reach the user as one line.

Every error a user can cause (a malformed recipe, an unknown plugin, a missing dataset) or meet
during a run (a non-finite loss) is one of these. The CLI prints ``error: <message>`` and exits with
``exit_code`` and no traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class BBVIError(Exception):
    """Base class of bbvi-kit's user-facing errors; ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


class InputError(BBVIError):
    """Bad input: a recipe, override, plugin name or file that cannot be used (exit code 2)."""

    exit_code = 2


class TrainingError(BBVIError):
    """A run that cannot go on, such as a non-finite loss or gradient (exit code 1)."""

    exit_code = 1


class OutputError(TrainingError):
    """A run's file could not be written (e.g. a full disk); what was written before stays intact
    (exit code 1)."""
