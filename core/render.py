"""An ``Explanation`` as HTML (a fragment or a whole page), JSON or PNG.

Every piece of text that reaches markup (tokens, labels, the original text) goes through
``html.escape(..., quote=True)``; colours and numbers are formatted from floats. The markup uses
only ``div`` and ``span`` (plus the page skeleton and one table in ``render_document``), and
inline styles, so it survives HTML sanitisers unchanged. Nothing here imports streamlit or torch.
"""

from __future__ import annotations

import html
import io
import json
import math
from typing import Sequence

from core.explain import Explanation

POSITIVE = (33, 102, 172)  # blue: the token argues for the target class
NEGATIVE = (178, 24, 43)  # red: against it
ATTENTION = (118, 42, 131)  # purple: attention weight (never negative)
WHITE = (255, 255, 255)
METHOD_NAMES = {"ig": "Integrated Gradients", "attention": "Attention weights", "occlusion": "Occlusion"}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _mix(colour: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    amount = min(max(amount, 0.0), 1.0)
    return tuple(round(w + (c - w) * amount) for w, c in zip(WHITE, colour))


def _rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*colour)


def score_scale(scores: Sequence[float]) -> float:
    """The |score| that gets full colour: the largest in the text (1.0 when all are zero)."""
    finite = [abs(s) for s in scores if math.isfinite(s)]
    return max(finite, default=0.0) or 1.0


def token_colour(score: float, scale: float, method: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, text colour) of one token."""
    if not math.isfinite(score):
        return (230, 230, 230), (0, 0, 0)
    amount = abs(score) / scale
    base = ATTENTION if method == "attention" else (POSITIVE if score >= 0 else NEGATIVE)
    background = _mix(base, amount)
    return background, ((255, 255, 255) if amount > 0.55 else (0, 0, 0))


def _legend(explanation: Explanation, scale: float) -> str:
    target = esc(explanation.target)
    if explanation.method == "attention":
        bar = f"linear-gradient(to right,{_rgb(WHITE)},{_rgb(ATTENTION)})"
        low, high = "0", f"{scale:.3g} (most attention)"
        note = "Attention shows where the model looked, not which class a word argues for."
    else:
        bar = f"linear-gradient(to right,{_rgb(NEGATIVE)},{_rgb(WHITE)},{_rgb(POSITIVE)})"
        low, high = f"-{scale:.3g} against {target}", f"+{scale:.3g} for {target}"
        note = ("Score = contribution to the log-odds of " + target + "." if explanation.method == "ig"
                else "Score = fall in the log-odds of " + target + " when the word is replaced by &lt;pad&gt;.")
    return (
        '<div class="xpl-legend" style="display:flex;align-items:center;gap:8px;font-size:0.8em;margin-top:6px">'
        f'<span class="xpl-legend-low">{low}</span>'
        f'<span class="xpl-legend-bar" style="display:inline-block;width:160px;height:12px;'
        f'border:1px solid #999;background:{bar}"></span>'
        f'<span class="xpl-legend-high">{high}</span>'
        f'<span class="xpl-legend-note" style="color:#555">{note}</span></div>')


def render_html(explanation: Explanation, *, legend: bool = True) -> str:
    """A fragment: the tokens coloured by score, then a legend. One token = one ``span.xpl-token``."""
    scale = score_scale(explanation.scores)
    unknown = explanation.unknown or [False] * len(explanation.tokens)
    spans = []
    for position, (token, score, oov) in enumerate(zip(explanation.tokens, explanation.scores, unknown)):
        background, colour = token_colour(score, scale, explanation.method)
        title = f"{token}: {score:+.4f}" + (" (not in the vocabulary: read as <unk>)" if oov else "")
        underline = "text-decoration:underline dotted;" if oov else ""
        spans.append(
            f'<span class="xpl-token{" xpl-unknown" if oov else ""}" data-position="{position}" '
            f'data-score="{score:.6g}" title="{esc(title)}" style="background-color:{_rgb(background)};'
            f'color:{_rgb(colour)};{underline}padding:1px 3px;margin:0 3px 4px 0;border-radius:3px;'
            f'display:inline-block;font-family:monospace">{esc(token)}</span>')
    if explanation.truncated:
        spans.append(f'<span class="xpl-truncated" style="color:#777;font-style:italic">'
                     f'… {explanation.truncated} more token{"s" if explanation.truncated != 1 else ""} '
                     f'cut off (max_length): not read by the model</span>')
    body = "".join(spans)
    return (f'<div class="xpl" data-method="{esc(explanation.method)}">'
            f'<div class="xpl-tokens" style="line-height:1.9">{body}</div>'
            f'{_legend(explanation, scale) if legend else ""}</div>')


def _summary_rows(explanation: Explanation) -> list[tuple[str, str]]:
    d = explanation.diagnostics
    rows = [("method", METHOD_NAMES.get(explanation.method, explanation.method)),
            ("predicted", explanation.label), ("explained class", explanation.target),
            ("probabilities", ", ".join(f"{k}: {v:.3f}" for k, v in explanation.probs.items()))]
    if explanation.delta is not None:
        rows.append(("convergence delta", f"{explanation.delta:.2e}"))
    if "completeness_error" in d:
        rows.append(("completeness error", f"{d['completeness_error']:.2%}"))
    deletion = d.get("deletion")
    if deletion:
        rows.append(("deletion test", f"removing the top {deletion['k']} tokens lowers p({explanation.target}) "
                                      f"by {deletion['top_drop']:+.3f} vs {deletion['random_drop']:+.3f} for "
                                      f"{deletion['k']} random tokens"))
    if explanation.truncated:
        rows.append(("truncated", f"{explanation.truncated} tokens not read"))
    return rows


def render_document(explanations: Sequence[Explanation], title: str = "Explanation") -> str:
    """A self-contained HTML page (for download): the text, then one section per explanation."""
    if not explanations:
        raise ValueError("Nothing to render: give at least one explanation.")
    sections = []
    for explanation in explanations:
        table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _summary_rows(explanation))
        sections.append(f'<div class="xpl-section"><h2>{esc(METHOD_NAMES.get(explanation.method, explanation.method))}'
                        f'</h2><table>{table}</table>{render_html(explanation)}</div>')
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}"
            "th{text-align:left;padding-right:1em;font-weight:normal;color:#555}"
            ".xpl-section{margin-bottom:2em}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"xpl-text\">{esc(explanations[0].text)}</p>"
            + "".join(sections) + "</body></html>")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(explanation: Explanation | Sequence[Explanation], indent: int | None = 2) -> str:
    """JSON with keys tokens, attributions, method, label, target, probs, delta (+ details)."""
    if isinstance(explanation, Explanation):
        data = explanation.to_dict()
    else:
        data = [e.to_dict() for e in explanation]
    return json.dumps(_finite(data), ensure_ascii=False, indent=indent, allow_nan=False)


def render_png(explanation: Explanation, width: int = 960) -> bytes:
    """The coloured tokens as a PNG (Pillow's built-in font: scripts it lacks show as boxes)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=16)
    scale = score_scale(explanation.scores)
    pad, gap, line_height = 12, 6, 28
    boxes, x, y = [], pad, pad + line_height  # first line holds the caption
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for token, score in zip(explanation.tokens, explanation.scores):
        w = int(measure.textlength(token, font=font)) + 8
        if x + w > width - pad and x > pad:
            x, y = pad, y + line_height
        boxes.append((x, y, w, token, score))
        x += w + gap
    image = Image.new("RGB", (width, y + line_height + pad), WHITE)
    draw = ImageDraw.Draw(image)
    caption = (f"{METHOD_NAMES.get(explanation.method, explanation.method)}: predicted {explanation.label}, "
               f"explaining {explanation.target}")
    draw.text((pad, pad), caption, fill=(0, 0, 0), font=font)
    for x, y, w, token, score in boxes:
        background, colour = token_colour(score, scale, explanation.method)
        draw.rectangle([x, y, x + w, y + line_height - 6], fill=background)
        draw.text((x + 4, y + 2), token, fill=colour, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
