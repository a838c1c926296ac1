"""WTForms used by the UI (every form carries a CSRF token through Flask-WTF)."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SelectField
from wtforms.validators import DataRequired, Length


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=128)])
    next = HiddenField()


class LogoutForm(FlaskForm):
    pass


class LocaleForm(FlaskForm):
    locale = SelectField(choices={"zh_CN": "简体中文", "en": "English"})
    next = HiddenField()
