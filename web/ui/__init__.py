"""UI blueprints, listed once so the app registers them in one place."""

from web.ui import areas, auth, dashboard, profiles, system

BLUEPRINTS = (auth.bp, dashboard.bp, areas.bp, profiles.bp, system.bp)
