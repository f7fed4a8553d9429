"""The README's sections and code blocks, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    """The text of the ``## {title}`` section (the title is a prefix of the heading)."""
    return README.read_text().split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def blocks(title: str, language: str) -> list[str]:
    """The ``language`` code blocks of a section, in order."""
    return re.findall(rf"```{language}\n(.*?)```", section(title), flags=re.DOTALL)
