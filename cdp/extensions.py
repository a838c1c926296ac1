"""Extension singletons, unbound until ``init_app``; one module so every part shares them."""

from flask_migrate import Migrate

migrate = Migrate()
