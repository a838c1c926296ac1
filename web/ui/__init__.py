"""UI blueprints, listed once so the app registers them in one place."""

from web.ui import areas, auth, dashboard, system

BLUEPRINTS = (auth.bp, dashboard.bp, areas.bp, system.bp)
