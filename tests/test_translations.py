"""The Simplified Chinese catalog is complete, compiled, and covers every string in the code.

Workflow after adding or changing a UI string: the commands at the top of babel.cfg
(extract, update, translate the new entries, compile).

The catalog lives in ``zh_Hans_CN`` (not ``zh_CN``): Babel parses "zh_CN" as
``Locale('zh', script='Hans', territory='CN')`` and Flask-Babel looks the catalog up under
``str(locale)``, which is "zh_Hans_CN".
"""

from __future__ import annotations

import gettext as gnu_gettext
import io
import re
from pathlib import Path

import pytest
from babel import Locale
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask_babel import force_locale, gettext

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "web" / "translations"
DEFAULT_LOCALE = "zh_CN"  # cdp/config.py BABEL_DEFAULT_LOCALE
CATALOG_DIR = TRANSLATIONS / str(Locale.parse(DEFAULT_LOCALE)) / "LC_MESSAGES"
PO_PATH = CATALOG_DIR / "messages.po"
MO_PATH = CATALOG_DIR / "messages.mo"
KEYWORDS = {**DEFAULT_KEYWORDS, "lazy_gettext": None, "_l": None}
PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?[sdifr%]")


def _catalog():
    with PO_PATH.open("rb") as fileobj:
        return read_po(fileobj, locale=DEFAULT_LOCALE)


def _ids(message) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _strings(message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def _placeholders(text: str) -> list[str]:
    return sorted(m.group(0) for m in PLACEHOLDER.finditer(text))


def test_catalog_sits_where_flask_babel_looks_for_the_default_locale():
    assert PO_PATH.is_file(), f"missing {PO_PATH.relative_to(ROOT)}"
    assert MO_PATH.is_file(), f"missing {MO_PATH.relative_to(ROOT)}; run pybabel compile"
    assert (TRANSLATIONS / "messages.pot").is_file()


def test_every_message_is_translated_with_matching_placeholders():
    problems = []
    for message in _catalog():
        if not message.id:
            continue  # the header
        if message.fuzzy:
            problems.append(f"fuzzy (check and clear the flag): {message.id!r}")
        strings = _strings(message)
        if not all(s and s.strip() for s in strings):
            problems.append(f"untranslated: {message.id!r}")
            continue
        expected = _placeholders(_ids(message)[0])
        for translated in strings:
            if _placeholders(translated) != expected:
                problems.append(
                    f"placeholders differ: {message.id!r} -> {translated!r} "
                    f"({expected} vs {_placeholders(translated)})"
                )
    assert not problems, "\n".join(problems)


def test_translations_are_chinese():
    # A copied English string would pass the "non-empty" check; brand names are the exception.
    untranslated = [
        m.id
        for m in _catalog()
        if m.id and m.id != "CarePath CDP" and not re.search(r"[\u4e00-\u9fff]", _strings(m)[0])
    ]
    assert not untranslated, f"no Chinese text in the translation of {untranslated}"


def test_compiled_catalog_matches_the_po_file():
    buffer = io.BytesIO()
    write_mo(buffer, _catalog(), use_fuzzy=False)
    buffer.seek(0)
    expected = gnu_gettext.GNUTranslations(buffer)._catalog
    with MO_PATH.open("rb") as fileobj:
        compiled = gnu_gettext.GNUTranslations(fileobj)._catalog
    stale = sorted(
        str(key)
        for key in expected.keys() | compiled.keys()
        if expected.get(key) != compiled.get(key)
    )
    assert not stale, (
        "messages.mo is out of date with messages.po; run `pybabel compile -d web/translations`. "
        f"Differing entries: {stale}"
    )


def test_every_string_in_the_code_is_in_the_catalog():
    with (ROOT / "babel.cfg").open() as fileobj:
        method_map, options_map = parse_mapping_cfg(fileobj, "babel.cfg")
    found: dict[str, str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS
    ):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, f"{filename}:{lineno}")
    assert len(found) > 50, "extraction found suspiciously few strings; check babel.cfg"
    catalog = _catalog()
    known = {msgid for m in catalog if m.id for msgid in _ids(m)}
    missing = [
        f"{where}: {msgid!r}" for msgid, where in sorted(found.items()) if msgid not in known
    ]
    assert not missing, (
        "strings not in messages.po (extract, update, translate, compile; see this module's "
        "docstring):\n" + "\n".join(missing)
    )


@pytest.mark.parametrize(
    ("locale", "expected"), [("zh_CN", "工作台"), ("en", "Dashboard")], ids=["zh_CN", "en"]
)
def test_the_app_serves_the_catalog(app, locale, expected):
    with app.test_request_context("/"), force_locale(locale):
        assert gettext("Dashboard") == expected
