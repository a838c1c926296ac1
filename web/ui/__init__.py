"""UI blueprints, listed once so the app registers them in one place."""

from web.ui import (
    areas,
    auth,
    content,
    dashboard,
    hcp,
    hcp_meetings,
    journeys,
    loyalty,
    models,
    privacy,
    profiles,
    segments,
    sources_sync,
    system,
)

BLUEPRINTS = (
    auth.bp,
    dashboard.bp,
    areas.bp,
    sources_sync.bp,
    profiles.bp,
    system.bp,
    content.bp,
    privacy.bp,
    segments.bp,
    journeys.bp,
    loyalty.bp,
    models.bp,
    hcp.bp,
    hcp_meetings.bp,
)
