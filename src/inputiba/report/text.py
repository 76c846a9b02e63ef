"""Token highlighting: an offline HTML page with a legend, and coloured terminal text.

Scores in [0, 1] map to one colour scale (white -> amber -> red) used by both outputs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["score_color", "html_page", "terminal_tokens"]

# white, amber, red: the scale's stops at 0, 0.5 and 1
_STOPS = ((0.0, (255, 255, 255)), (0.5, (255, 196, 84)), (1.0, (214, 39, 40)))


def score_color(score: float) -> tuple[int, int, int]:
    """RGB of a score on the scale (scores are clipped to [0, 1])."""
    s = min(max(float(score), 0.0), 1.0)
    for (s0, c0), (s1, c1) in zip(_STOPS, _STOPS[1:], strict=False):
        if s <= s1:
            f = (s - s0) / (s1 - s0)
            return tuple(round(a + (b - a) * f) for a, b in zip(c0, c1, strict=True))  # type: ignore[return-value]
    return _STOPS[-1][1]


def _text_color(rgb: tuple[int, int, int]) -> str:
    r, g, b = rgb
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def html_page(records: Sequence[dict[str, Any]], title: str = "InputIBA token attributions") -> str:
    """A self-contained HTML page (no scripts, no external files) highlighting each text.

    Args:
        records: dicts with ``tokens``, ``scores`` and optionally ``text``, ``label``,
            ``probability``, ``target_label`` (as in ``results.json``).
        title: page title.

    Returns:
        The page as a string; hovering a token shows its score.
    """
    rows = []
    for i, rec in enumerate(records):
        spans = []
        for tok, s in zip(rec["tokens"], rec["scores"], strict=True):
            rgb = score_color(s)
            spans.append(
                f'<span class="tok" title="{s:.3f}" style="background:rgb{rgb};'
                f'color:{_text_color(rgb)}">{html.escape(tok)}</span>'
            )
        meta = []
        if "label" in rec:
            meta.append(f"predicted <b>{html.escape(str(rec['label']))}</b>")
        if "probability" in rec:
            meta.append(f"p = {float(rec['probability']):.3f}")
        if rec.get("target_label") not in (None, rec.get("label")):
            meta.append(f"explained class <b>{html.escape(str(rec['target_label']))}</b>")
        rows.append(
            f'<div class="item"><div class="meta">#{i + 1} &middot; {" &middot; ".join(meta)}'
            f'</div><div class="tokens">{" ".join(spans)}</div></div>'
        )
    stops = ", ".join(f"rgb{c} {int(s * 100)}%" for s, c in _STOPS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
.item {{ margin: 1em 0; padding: 0.6em 0.8em; border: 1px solid #ddd; border-radius: 6px; }}
.meta {{ font-size: 0.85em; color: #555; margin-bottom: 0.4em; }}
.tokens {{ line-height: 2em; }}
.tok {{ padding: 0.15em 0.25em; border-radius: 3px; }}
.legend {{ display: flex; align-items: center; gap: 0.6em; font-size: 0.85em; }}
.bar {{ width: 16em; height: 0.9em; border: 1px solid #bbb;
        background: linear-gradient(to right, {stops}); }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<div class="legend"><span>token score 0</span><div class="bar"></div><span>1</span>
<span>(InputIBA: the share of the token's embedding the prediction needs)</span></div>
{chr(10).join(rows)}
</body></html>
"""


def terminal_tokens(
    tokens: Sequence[str], scores: Sequence[float], color: bool = True
) -> str:
    """The tokens on one line, each on its score's background colour (24-bit ANSI).

    Without colour, tokens scoring at least 0.5 are bracketed with their score.
    """
    out = []
    for tok, s in zip(tokens, scores, strict=True):
        if color:
            r, g, b = score_color(s)
            fg = "30" if _text_color((r, g, b)) == "#000" else "97"
            out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[{fg}m{tok}\x1b[0m")
        else:
            out.append(f"[{tok} {s:.2f}]" if s >= 0.5 else tok)
    return " ".join(out)
