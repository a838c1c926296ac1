"""WTForms used by the UI (every form carries a CSRF token through Flask-WTF)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange
from wtforms.widgets import HiddenInput

from cdp.exceptions import ValidationFailed
from cdp.models.profiles import PROFILE_KINDS
from cdp.sources import SourceKind
from web.labels import CHANNEL_LABELS, KIND_LABELS


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=128)])
    next = HiddenField()


class LogoutForm(FlaskForm):
    pass


class LocaleForm(FlaskForm):
    locale = SelectField(choices={"zh_CN": "简体中文", "en": "English"})
    next = HiddenField()


class ActionForm(FlaskForm):
    """A button that changes something: only the CSRF token (reveal PII, rotate a key)."""


class SearchForm(FlaskForm):
    """Profile search is a POST so phone numbers and names stay out of URLs and access logs."""

    q = StringField(validators=[Length(max=200)])
    kind = HiddenField()


class UnmergeForm(FlaskForm):
    merge_id = IntegerField(widget=HiddenInput(), validators=[InputRequired(), NumberRange(min=1)])


# Labels of source options (the keys of each kind's options schema); unknown keys show as is.
OPTION_LABELS = {
    "app_id": _l("App ID"),
    "token": _l("Token"),
    "aes_key": _l("EncodingAESKey"),
    "app_secret": _l("App secret"),
    "api_base": _l("API base URL"),
    "sync_followers": _l("Sync followers"),
    "sync_interval_hours": _l("Sync interval (hours)"),
    "rate_per_second": _l("API calls per second"),
    "partner": _l("Partner code"),
    "partner_code": _l("Partner code"),
    "secret": _l("Signing secret"),
    "platform": _l("Platform"),
    "client_id": _l("Client ID (Youzan)"),
    "app_key": _l("App key (JD / Tmall)"),
    "access_token": _l("Access token (JD / Tmall)"),
    "pull_start": _l("Pull orders from (ISO 8601 time)"),
    "pull_window_minutes": _l("Pull window (minutes)"),
    "pull_interval_minutes": _l("Pull interval (minutes)"),
    "callback_token": _l("Callback token"),
    "channel": _l("Channel"),
}
CHOICE_LABELS = {
    "youzan": _l("Youzan"),
    "tmall": _l("Tmall"),
    "taobao": _l("Taobao"),
    "jd": _l("JD.com"),
    "other": _l("Other"),
}


def _accepts(prop: dict, json_type: str) -> bool:
    alternatives = [prop, *prop.get("anyOf", ()), *prop.get("oneOf", ())]
    return any(alt.get("type") == json_type for alt in alternatives)


def _option_field(key: str, prop: dict, secret: bool):
    """A field for one option, chosen from its JSON Schema; the schema alone validates it."""
    label = OPTION_LABELS.get(key) or prop.get("title") or key
    if secret:
        return PasswordField(label)  # never rendered with its value
    if "enum" in prop:
        choices = [SelectChoice("", _l("(not set)"))]
        choices += [SelectChoice(v, CHOICE_LABELS.get(v, v)) for v in prop["enum"]]
        return SelectField(label, choices=choices, validate_choice=False)
    if _accepts(prop, "boolean"):
        choices = [
            SelectChoice("", _l("(default)")),
            SelectChoice("true", _l("Yes")),
            SelectChoice("false", _l("No")),
        ]
        return SelectField(label, choices=choices, validate_choice=False)
    numeric = _accepts(prop, "integer") or _accepts(prop, "number")
    return StringField(label, render_kw={"inputmode": "decimal"} if numeric else None)


def _coerce(prop: dict, text: str):
    """Form text as the option's type when the schema takes no string (else as the CLI sends it)."""
    converters = {"integer": int, "number": float, "boolean": lambda t: t == "true"}
    try:
        return converters[prop["type"]](text)
    except (KeyError, ValueError):
        return text


def option_text(value) -> str:
    """A stored option value as a form shows it (JSON booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class OptionSpec:
    kind: str
    key: str
    prop: dict
    secret: bool
    required: bool

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.key}"


class _OptionsForm(FlaskForm):
    """Option fields for each kind, named ``<kind>-<option>``, made from the kinds' schemas."""

    option_specs: tuple[OptionSpec, ...] = ()

    @property
    def option_groups(self) -> list[tuple[str, list[tuple[OptionSpec, object]]]]:
        groups: dict[str, list] = {}
        for spec in self.option_specs:
            groups.setdefault(spec.kind, []).append((spec, self[spec.name]))
        return list(groups.items())

    def options_for(self, kind: str) -> dict:
        """The options of ``kind`` that were filled in (blank means: not set)."""
        options = {}
        for spec in self.option_specs:
            value = self[spec.name].data if spec.kind == kind else None
            value = value.strip() if isinstance(value, str) else value
            if value not in (None, ""):
                options[spec.key] = _coerce(spec.prop, value)
        return options

    def add_domain_error(self, exc: ValidationFailed, kind: str) -> None:
        """Show a domain error next to its field (``options.<key>`` is that kind's option)."""
        name = exc.field or ""
        if name.startswith("options."):
            name = f"{kind}-{name.removeprefix('options.').split('.')[0]}"
        if name in self._fields and name != "csrf_token":
            self[name].errors = [*self[name].errors, exc.message]
        else:
            self.form_errors.append(exc.message)


def _with_options(base: type[_OptionsForm], kinds: Iterable[SourceKind]) -> type[_OptionsForm]:
    """A subclass of ``base`` with one field per option of each kind (WTForms builds fields
    from class attributes, so per-kind fields mean a class made for the registered kinds)."""
    specs, fields = [], {}
    for kind in kinds:
        schema = kind.options_schema
        required = set(schema.get("required", ()))
        for key, prop in schema.get("properties", {}).items():
            spec = OptionSpec(kind.name, key, prop, key in kind.secret_options, key in required)
            specs.append(spec)
            fields[spec.name] = _option_field(key, prop, spec.secret)
    return type(base.__name__, (base,), {**fields, "option_specs": tuple(specs)})


class SourceForm(_OptionsForm):
    """Create a source; the kind choices are the kinds connectors registered (set per request)."""

    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=120)])
    kind = SelectField(_l("Kind"), validators=[DataRequired()])
    default_profile_kind = SelectField(
        _l("Default profile kind"),
        choices=[SelectChoice(kind, KIND_LABELS[kind]) for kind in PROFILE_KINDS],
        default="patient",
    )


class SourceEditForm(_OptionsForm):
    """Edit a source; its kind is fixed, a secret left blank keeps its stored value."""

    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=120)])
    default_profile_kind = SelectField(
        _l("Default profile kind"),
        choices=[SelectChoice(kind, KIND_LABELS[kind]) for kind in PROFILE_KINDS],
    )
    enabled = BooleanField(_l("Enabled (accepts data)"))


def source_form(kinds: Iterable[SourceKind]) -> SourceForm:
    kinds = sorted(kinds, key=lambda k: k.name)
    form = _with_options(SourceForm, kinds)()
    form.kind.choices = [SelectChoice(k.name, CHANNEL_LABELS.get(k.name, k.name)) for k in kinds]
    return form


def source_edit_form(kind: SourceKind, source, options: dict) -> SourceEditForm:
    """The edit form, filled with the source's values; secret options are never filled in."""
    data = {
        "name": source.name,
        "default_profile_kind": source.default_profile_kind,
        "enabled": source.enabled,
        **{
            f"{kind.name}-{key}": option_text(value)
            for key, value in options.items()
            if key not in kind.secret_options
        },
    }
    return _with_options(SourceEditForm, [kind])(data=data)
