"""A small allow-list HTML sanitiser for articles (the standard library parser, no dependency).

Only the tags and attributes listed survive; everything else is dropped, the text of
script/style-like elements included. Links may only use http(s), mailto, tel or relative
URLs. Text and attribute values are re-escaped, so the output is well-formed.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

ALLOWED_TAGS = {
    "p": (),
    "br": (),
    "hr": (),
    "strong": (),
    "b": (),
    "em": (),
    "i": (),
    "u": (),
    "s": (),
    "sub": (),
    "sup": (),
    "small": (),
    "span": (),
    "div": (),
    "blockquote": (),
    "h2": (),
    "h3": (),
    "h4": (),
    "ul": (),
    "ol": (),
    "li": (),
    "table": (),
    "thead": (),
    "tbody": (),
    "tr": (),
    "th": ("colspan", "rowspan"),
    "td": ("colspan", "rowspan"),
    "a": ("href", "title"),
    "img": ("src", "alt", "width", "height"),
}
VOID_TAGS = {"br", "hr", "img"}
# Elements whose content is dropped with them (not shown as text).
DROP_CONTENT = {
    "script",
    "style",
    "iframe",
    "object",
    "embed",
    "template",
    "noscript",
    "svg",
    "math",
}
URL_ATTRIBUTES = {"href", "src"}
_SAFE_URL = re.compile(r"^(?:https?:|mailto:|tel:|/|#|\.|\{\{|[^:/?#]*(?:[/?#]|$))", re.IGNORECASE)
_NUMBER = re.compile(r"^\d{1,4}$")


def safe_url(value: str) -> bool:
    # Browsers ignore control characters and whitespace inside a scheme ("java\tscript:").
    compact = re.sub(r"[\x00-\x20]", "", html.unescape(value))
    return bool(_SAFE_URL.match(compact))


class _Sanitiser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.dropping = 0

    def handle_starttag(self, tag, attrs):
        if tag in DROP_CONTENT:
            self.dropping += 1
            return
        if self.dropping or tag not in ALLOWED_TAGS:
            return
        kept = []
        for name, value in attrs:
            if name not in ALLOWED_TAGS[tag] or value is None:
                continue
            if name in URL_ATTRIBUTES and not safe_url(value):
                continue
            if name in ("width", "height", "colspan", "rowspan") and not _NUMBER.match(value):
                continue
            kept.append(f' {name}="{html.escape(value, quote=True)}"')
        if tag == "a" and any(k.startswith(" href=") for k in kept):
            kept.append(' rel="noopener noreferrer"')
        self.out.append(f"<{tag}{''.join(kept)}>")
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag in DROP_CONTENT:
            self.dropping -= 1
        elif tag not in VOID_TAGS and self.open and self.open[-1] == tag:
            self.open.pop()
            self.out.append(f"</{tag}>")

    def handle_endtag(self, tag):
        if tag in DROP_CONTENT:
            self.dropping = max(0, self.dropping - 1)
            return
        if self.dropping or tag not in self.open:
            return
        while self.open:  # close anything left open inside it
            inner = self.open.pop()
            self.out.append(f"</{inner}>")
            if inner == tag:
                break

    def handle_data(self, data):
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))

    def close(self):
        super().close()
        while self.open:
            self.out.append(f"</{self.open.pop()}>")


def sanitise_html(markup: str) -> str:
    """Keep only allow-listed tags and attributes of ``markup``; return safe HTML."""
    parser = _Sanitiser()
    parser.feed(markup or "")
    parser.close()
    return "".join(parser.out)
