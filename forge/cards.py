"""Model cards as templates: ``forge/templates/NAME.md`` filled with ``str.format``.

The wording of a card lives in its template, where it reads as the card does;
the code only measures and names the values (``forge.tiny_*.card.card_values``).
A field the template names and the values lack is an error, not a blank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

TEMPLATES = Path(__file__).parent / "templates"


def render_card(name: str, values: Mapping[str, object]) -> str:
    """Fill template ``name`` (e.g. 'tiny_audiollm') with ``values`` (format specs live in the template)."""
    text = (TEMPLATES / f"{name}.md").read_text()
    try:
        return text.format_map(values)
    except KeyError as exc:
        raise KeyError(f"card template '{name}.md' needs the value {exc}; add it to the card's values") from exc
