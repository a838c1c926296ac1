"""The ``cdp`` console command: Flask's CLI group bound to the application factory."""

from flask.cli import FlaskGroup

from cdp.app import create_app

main = FlaskGroup(
    create_app=create_app,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
    help="CarePath CDP management commands.",
)
