"""Rendering content: sandboxed Jinja over a profile's traits and the journey context.

Templates see exactly two names: ``profile`` (the profile's traits, plus personal data such
as ``profile.name`` decrypted only when a template uses it) and ``context`` (what the
journey passes, e.g. ``context.refill_date``). Undefined values are errors, never blanks:
``StrictUndefined`` raises, and the variables a version uses are known before it is sent.
"""

from __future__ import annotations

import functools

from jinja2 import StrictUndefined, TemplateError, UndefinedError, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from cdp.content.sanitize import sanitise_html
from cdp.content.schemas import TEMPLATE_KEYS
from cdp.exceptions import ValidationFailed
from cdp.identity.traits import PII_TRAIT_KEYS
from cdp.models import Profile
from cdp.profiles import decrypt_profile_pii

NAMESPACES = ("profile", "context")
MAX_OUTPUT = 100_000

TEXT_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
HTML_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
for _env in (TEXT_ENV, HTML_ENV):
    _env.globals.clear()  # no range/lipsum/cycler/namespace: templates see profile and context


class RenderError(ValidationFailed):
    """A template does not compile, uses an unknown variable, or a value is missing."""


def template_strings(kind: str, body: dict) -> dict[str, str]:
    """Every template string of a body by its path (``body.text``, ``body.fields.thing1`` …)."""
    found: dict[str, str] = {}
    for key in TEMPLATE_KEYS.get(kind, ()):
        if isinstance(body.get(key), str):
            found[f"body.{key}"] = body[key]
    for key, value in (body.get("fields") or {}).items():
        if isinstance(value, str):
            found[f"body.fields.{key}"] = value
    if kind == "wechat_template" and isinstance(body.get("miniprogram"), dict):
        page = body["miniprogram"].get("pagepath")
        if isinstance(page, str):
            found["body.miniprogram.pagepath"] = page
    if kind == "webhook":
        _payload_strings(body.get("payload"), "body.payload", found)
    return found


def _payload_strings(value, path: str, found: dict) -> None:
    if isinstance(value, str):
        found[path] = value
    elif isinstance(value, dict):
        for key, inner in value.items():
            _payload_strings(inner, f"{path}.{key}", found)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _payload_strings(inner, f"{path}.{index}", found)


def _walk(node: nodes.Node, parent: nodes.Node | None, used: set[str], bare: set[str]) -> None:
    if isinstance(node, nodes.Name) and node.name in NAMESPACES and node.ctx == "load":
        attr = None
        if isinstance(parent, nodes.Getattr) and parent.node is node:
            attr = parent.attr
        elif isinstance(parent, nodes.Getitem) and parent.node is node:
            attr = parent.arg.value if isinstance(parent.arg, nodes.Const) else None
        if isinstance(attr, str):
            used.add(f"{node.name}.{attr}")
        else:
            bare.add(node.name)
    for child in node.iter_child_nodes():
        _walk(child, node, used, bare)


def variables_in(source: str, where: str = "body") -> set[str]:
    """The ``profile.x`` / ``context.y`` variables a template uses; RenderError if it is bad."""
    return set(_variables_in(source, where))


@functools.lru_cache(maxsize=2048)
def _variables_in(source: str, where: str) -> frozenset[str]:
    # Cached: journeys render the same approved templates for every recipient.
    try:
        tree = TEXT_ENV.parse(source)
    except TemplateError as exc:
        raise RenderError(f"{where}: template error: {exc.message}", where) from None
    unknown = sorted(find_undeclared_variables(tree) - set(NAMESPACES))
    if unknown:
        raise RenderError(
            f"{where}: unknown variable '{unknown[0]}'; use profile.<trait> or context.<key>",
            where,
        )
    used: set[str] = set()
    bare: set[str] = set()
    _walk(tree, None, used, bare)
    if bare:
        name = sorted(bare)[0]
        raise RenderError(f"{where}: use {name}.<name>, not {name} itself", where)
    return frozenset(used)


def variables_of(kind: str, body: dict) -> list[str]:
    """Every variable the templates of a body use, sorted."""
    found: set[str] = set()
    for where, source in template_strings(kind, body).items():
        found |= variables_in(source, where)
    return sorted(found)


def pii_fields_needed(variables: list[str]) -> list[str]:
    return sorted(
        v.split(".", 1)[1]
        for v in variables
        if v.startswith("profile.") and v.split(".", 1)[1] in PII_TRAIT_KEYS
    )


def profile_values(profile: Profile, variables: list[str]) -> dict:
    """What ``profile`` holds in templates: traits, and only the personal data they use."""
    values = dict(profile.traits or {})
    if pii_fields_needed(variables) and profile.pii_encrypted:
        pii = decrypt_profile_pii(profile.pii_encrypted)
        values.update({k: v for k, v in pii.items() if f"profile.{k}" in variables})
    return values


def missing_variables(variables: list[str], profile: dict, context: dict) -> list[str]:
    scopes = {"profile": profile, "context": context}
    missing = []
    for variable in variables:
        scope, _, name = variable.partition(".")
        if scopes[scope].get(name) in (None, ""):
            missing.append(variable)
    return missing


@functools.lru_cache(maxsize=2048)
def _template(env, source: str):
    """Compiled once per template text and sandbox (compiling costs more than rendering)."""
    return env.from_string(source)


def _render_one(source: str, where: str, env, values: dict) -> str:
    try:
        text = _template(env, source).render(**values)
    except UndefinedError:
        variables = sorted(variables_in(source, where))
        missing = missing_variables(variables, values["profile"], values["context"])
        raise RenderError(
            f"{where}: missing value for {', '.join(missing) or 'a variable'}", where
        ) from None
    except SecurityError as exc:
        raise RenderError(f"{where}: not allowed in a template: {exc}", where) from None
    except TemplateError as exc:
        raise RenderError(f"{where}: {exc.message or exc.__class__.__name__}", where) from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise RenderError(f"{where}: {exc}", where) from None
    if len(text) > MAX_OUTPUT:
        raise RenderError(f"{where}: renders longer than {MAX_OUTPUT} characters", where)
    return text


def _render_payload(value, path: str, values: dict):
    if isinstance(value, str):
        return _render_one(value, path, TEXT_ENV, values)
    if isinstance(value, dict):
        return {k: _render_payload(v, f"{path}.{k}", values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_payload(v, f"{path}.{i}", values) for i, v in enumerate(value)]
    return value


def render_body(kind: str, body: dict, profile: dict, context: dict) -> dict:
    """The message a channel adapter sends: every template of ``body`` rendered."""
    variables_of(kind, body)  # unknown names are errors even where a branch is not taken
    # An empty value is a missing one: StrictUndefined raises instead of sending a blank.
    values = {
        "profile": {k: v for k, v in profile.items() if v not in (None, "")},
        "context": {k: v for k, v in context.items() if v not in (None, "")},
    }

    def text(key: str) -> str | None:
        source = body.get(key)
        return _render_one(source, f"body.{key}", TEXT_ENV, values) if source else None

    def fields() -> dict:
        return {
            key: {"value": _render_one(source, f"body.fields.{key}", TEXT_ENV, values)}
            for key, source in (body.get("fields") or {}).items()
        }

    if kind == "sms":
        return {"text": text("text")}
    if kind == "wechat_template":
        message = {"template_id": body.get("template_id"), "data": fields(), "url": text("url")}
        if body.get("miniprogram"):
            page = body["miniprogram"].get("pagepath") or ""
            message["miniprogram"] = {
                "appid": body["miniprogram"].get("appid"),
                "pagepath": _render_one(page, "body.miniprogram.pagepath", TEXT_ENV, values),
            }
        return message
    if kind == "miniprogram_subscribe":
        return {"template_id": body.get("template_id"), "page": text("page"), "data": fields()}
    if kind == "article":
        markup = _render_one(body.get("html") or "", "body.html", HTML_ENV, values)
        return {"title": text("title"), "summary": text("summary"), "html": sanitise_html(markup)}
    if kind == "miniprogram_link":
        return {"appid": body.get("appid"), "path": text("path"), "title": text("title")}
    if kind == "webhook":
        return {
            "url": text("url"),
            "payload": _render_payload(body.get("payload") or {}, "body.payload", values),
        }
    raise RenderError(f"unknown content kind '{kind}'", "kind")


def sample_render(kind: str, body: dict) -> dict:
    """Render with a placeholder for every variable: proves the templates run at all."""
    variables = variables_of(kind, body)
    sample = {"profile": {}, "context": {}}
    for variable in variables:
        scope, _, name = variable.partition(".")
        sample[scope][name] = "x"
    return render_body(kind, body, sample["profile"], sample["context"])
