"""Rendering explanations: strict escaping (XSS payloads stay text), JSON, PNG, colours."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from core.explain import Explanation, Explainer
from core.render import NEGATIVE, POSITIVE, render_document, render_html, render_png, to_json

PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    '"><script>alert(document.cookie)</script>',
    "' onmouseover='alert(1)",
    "</span></div><b>bold</b>",
    "<!-- comment -->",
    "&amp;&lt;",
    "javascript:alert(1)",
    "<svg/onload=alert(1)>",
    "plain",
]
FRAGMENT_TAGS = {"div", "span"}
ATTRIBUTES = {"class", "style", "title", "data-position", "data-score", "data-method"}


class Collector(HTMLParser):
    """Every tag and attribute, and the text of each ``span.xpl-token``."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attributes, self.tokens, self.titles = [], set(), [], []
        self.comments, self.texts = [], []
        self._in_token = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        self.attributes |= set(attrs)
        if tag == "span" and "xpl-token" in (attrs.get("class") or "").split():
            self._in_token = 1
            self.tokens.append("")
            self.titles.append(attrs.get("title"))
        elif self._in_token:
            self._in_token += 1

    def handle_endtag(self, tag):
        if self._in_token:
            self._in_token -= 1

    def handle_data(self, data):
        self.texts.append(data)
        if self._in_token:
            self.tokens[-1] += data

    def handle_comment(self, data):
        self.comments.append(data)


def parse(markup: str) -> Collector:
    collector = Collector()
    collector.feed(markup)
    collector.close()
    return collector


def record(tokens, scores=None, method="ig", **extra) -> Explanation:
    scores = scores if scores is not None else [(-1) ** i * (i + 1) / len(tokens) for i in range(len(tokens))]
    return Explanation(text=" ".join(tokens), tokens=list(tokens), scores=list(scores), method=method,
                       label="pos", target="pos", probs={"neg": 0.1, "pos": 0.9}, **extra)


@pytest.mark.parametrize("method", ["ig", "attention", "occlusion"])
def test_tokens_stay_text_in_the_fragment(method):
    e = record(PAYLOADS, method=method, unknown=[True] + [False] * (len(PAYLOADS) - 1))
    parsed = parse(render_html(e))
    assert set(parsed.tags) <= FRAGMENT_TAGS
    assert parsed.attributes <= ATTRIBUTES
    assert parsed.tokens == PAYLOADS
    assert not parsed.comments
    # titles carry the token and its score, as text
    assert parsed.titles[0].startswith("<img src=x onerror=alert(1)>: ") and "read as <unk>" in parsed.titles[0]


def test_labels_are_escaped_in_the_legend_and_the_document():
    e = Explanation(text="<script>alert(1)</script> film", tokens=["<script>alert(1)</script>", "film"],
                    scores=[0.3, -0.2], method="ig", label="<b>pos</b>", target="<i onclick=x>",
                    probs={"<b>pos</b>": 0.8, "<i onclick=x>": 0.2}, delta=1e-6,
                    diagnostics={"completeness_error": 1e-6, "deletion": {
                        "k": 1, "top_drop": 0.5, "random_drop": 0.1, "top_flip": True, "random_flip_rate": 0.0}})
    page = render_document([e], title="<title>x</title>")
    parsed = parse(page)
    assert set(parsed.tags) <= FRAGMENT_TAGS | {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p",
                                                "table", "tr", "th", "td"}
    assert parsed.tags.count("title") == 1 and "script" not in parsed.tags and "b" not in parsed.tags
    assert parsed.tokens == e.tokens
    text = "".join(parsed.texts)
    assert "<title>x</title>" in text and "<script>alert(1)</script> film" in text
    assert "for <i onclick=x>" in text and "<b>pos</b>" in text


def test_truncation_is_shown_after_the_tokens():
    parsed = parse(render_html(record(["a", "b"], truncated=7)))
    assert parsed.tokens == ["a", "b"]
    assert "7 more tokens cut off" in "".join(parsed.texts)
    assert "cut off" not in "".join(parse(render_html(record(["a", "b"]))).texts)


def colour_of(markup: str, position: int) -> tuple[int, ...]:
    marker = f'data-position="{position}"'
    style = markup[markup.index(marker):].split('background-color:rgb(', 1)[1].split(")", 1)[0]
    return tuple(int(v) for v in style.split(","))


def test_colours_diverge_by_sign_and_grow_with_magnitude():
    markup = render_html(record(["for", "against", "weak", "zero"], [2.0, -2.0, 0.5, 0.0]))
    assert colour_of(markup, 0) == POSITIVE
    assert colour_of(markup, 1) == NEGATIVE
    weak = colour_of(markup, 2)
    assert weak[2] > weak[0] and weak != POSITIVE  # a lighter blue
    assert colour_of(markup, 3) == (255, 255, 255)


def test_json_has_the_cli_keys_and_no_nan():
    e = record(["<a>", "b"], delta=0.01, diagnostics={"completeness_error": float("inf")})
    data = json.loads(to_json(e))
    assert data["tokens"] == ["<a>", "b"] and len(data["attributions"]) == 2
    assert {"method", "label", "target", "probs", "delta", "truncated"} <= set(data)
    assert data["diagnostics"]["completeness_error"] is None
    both = json.loads(to_json([e, record(["c"], method="attention")]))
    assert [d["method"] for d in both] == ["ig", "attention"]


def test_png_is_an_image_that_grows_with_the_text():
    small = render_png(record(["one", "two"]))
    large = render_png(record(["word"] * 200))
    assert small.startswith(b"\x89PNG\r\n\x1a\n") and large.startswith(b"\x89PNG")
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(large)).height > Image.open(io.BytesIO(small)).height


def test_a_real_explanation_of_an_xss_text_renders_inert():
    """From raw text through the real tokenizer and an (untrained) model to markup."""
    from core.models import ModelConfig, build_model
    from core.predict import Predictor
    from core.text import TextConfig, TextEncoder

    text = 'the film <img src=x onerror=alert(1)> was "great" & <script>alert(2)</script>'
    for tokenizer in ("whitespace", "en"):
        encoder = TextEncoder.fit(TextConfig(tokenizer=tokenizer), [text, "another film"])
        model = build_model(ModelConfig(vocab_size=len(encoder.vocab), embedding_dim=8, hidden_dim=8,
                                        pooling="attention"))
        predictor = Predictor(model, encoder, ["label"], [["neg", "pos"]])
        explainer = Explainer(predictor)
        for method in ("ig", "attention", "occlusion"):
            e = explainer.explain(text, method, n_steps=10)
            assert e.tokens == encoder.encode(text).tokens
            parsed = parse(render_html(e))
            assert set(parsed.tags) <= FRAGMENT_TAGS
            assert parsed.tokens == e.tokens
            page = parse(render_document([e]))
            assert "script" not in page.tags and "img" not in page.tags
