"""Parsing provider XML safely: no DTD, no entities, no external references, bounded size.

defusedxml refuses any ``<!DOCTYPE`` (so no "billion laughs" entity expansion and no
external entity / XXE), and callers cap the body before it gets here. The result is a
plain dict in xmltodict's shape (what wechatpy's message classes read): an element with
children becomes a dict, a repeated tag a list, a leaf its text ("" when empty).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from defusedxml import ElementTree as SafeTree
from defusedxml.common import DefusedXmlException


class XmlRefused(ValueError):
    """The XML is malformed or uses a forbidden construct; ``str()`` says which."""


def _value(element: Element):
    if len(element) == 0:
        return element.text or ""
    out: dict = {}
    for child in element:
        value = _value(child)
        if child.tag in out:
            existing = out[child.tag]
            out[child.tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            out[child.tag] = value
    return out


def parse_xml(raw: bytes | str, root: str = "xml") -> dict:
    """The document's root element as a dict; XmlRefused when it is not safe, well-formed XML."""
    try:
        element = SafeTree.fromstring(
            raw, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        message = f"XML refused: {type(exc).__name__} (DTDs and entities are not allowed)"
        raise XmlRefused(message) from None
    except ParseError as exc:
        raise XmlRefused(f"malformed XML: {exc}") from None
    if element.tag != root:
        raise XmlRefused(f"XML root element must be <{root}>, not <{str(element.tag)[:40]}>")
    value = _value(element)
    return value if isinstance(value, dict) else {}
