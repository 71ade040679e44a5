"""One plain-language finding about a run or a sweep: the unit of the report's Findings.

Dependency-free, so a diagnostic plugin can return findings about its own rows
(:meth:`bbvi_kit.diagnostics.Diagnostic.findings`) without importing the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["LEVELS", "Finding"]

LEVELS = ("good", "info", "warning", "problem")
"""The levels of a finding, from best to worst."""


@dataclass
class Finding:
    """One sentence of the report.

    Attributes:
        text: the sentence, as the page shows it.
        level: ``good``, ``info``, ``warning`` or ``problem``.
        topic: ``status``, ``rate``, ``test``, ``sweep`` or ``diagnostic:<name>``.
        numbers: the values the sentence states (``{"step": 30, "active": 12, ...}``), for
            programs and tests that should not parse the text.
    """

    text: str
    level: str = "info"
    topic: str = "info"
    numbers: dict[str, float] = field(default_factory=dict)

    def capitalised(self) -> "Finding":
        """The same finding with its first letter in upper case (a sentence of its own)."""
        return dataclasses.replace(self, text=self.text[:1].upper() + self.text[1:])

    def with_topic(self, topic: str) -> "Finding":
        """The same finding under another topic."""
        return dataclasses.replace(self, topic=topic)
