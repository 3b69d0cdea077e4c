"""The app's look: a light theme with system fonts (no web-font downloads) and a little CSS."""

from __future__ import annotations

import gradio as gr

FONT = ["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def theme() -> gr.themes.Base:
    # Plain font names only: a GoogleFont would make every page load wait on the network.
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="sky", neutral_hue="slate",
                          radius_size="md", text_size="md", font=FONT, font_mono=MONO).set(
        block_title_text_weight="600",
        button_primary_background_fill="*primary_600",
        button_primary_background_fill_hover="*primary_700",
    )


CSS = """
.gradio-container { max-width: 1400px !important; margin: auto; }
#ard-header { padding: 6px 4px 2px 4px; }
#ard-header h1 { font-size: 1.45rem; margin: 0; letter-spacing: -0.01em; }
#ard-header p { margin: 2px 0 0 0; color: var(--body-text-color-subdued); font-size: 0.9rem; }
.ard-note { padding: 8px 12px; border-radius: 8px; font-size: 0.92rem; margin: 4px 0; }
.ard-info { background: #eef2ff; color: #3730a3; }
.ard-warn { background: #fff7ed; color: #9a3412; }
.ard-ok { background: #ecfdf5; color: #065f46; }
.ard-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 6px !important; }
.ard-card .prose p { margin: 0.15em 0; }
/* two example cards per row; a lone last card keeps half the width */
.ard-card { flex: 1 1 0 !important; max-width: calc(50% - 8px); }
.ard-pager { align-items: center; }
.ard-bottom { align-items: flex-end; }
#concepts-info { text-align: center; }
.ard-feature-title h2 { margin-bottom: 0.1em; }
.ard-kbd { font-family: ui-monospace, monospace; background: #f1f5f9; padding: 1px 5px; border-radius: 4px; }
.ard-reveal { border-left: 4px solid var(--color-accent); padding-left: 10px; }
"""
