"""WTForms used by the UI (every form carries a CSRF token through Flask-WTF)."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, IntegerField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange
from wtforms.widgets import HiddenInput

from cdp.models.profiles import PROFILE_KINDS
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


class SourceForm(FlaskForm):
    """Create a source; the kind choices are the kinds connectors registered (set per request)."""

    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=120)])
    kind = SelectField(_l("Kind"), validators=[DataRequired()])
    default_profile_kind = SelectField(
        _l("Default profile kind"),
        choices=[SelectChoice(kind, KIND_LABELS[kind]) for kind in PROFILE_KINDS],
        default="patient",
    )

    def __init__(self, kinds, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind.choices = [SelectChoice(k, CHANNEL_LABELS.get(k, k)) for k in sorted(kinds)]
