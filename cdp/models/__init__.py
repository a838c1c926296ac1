"""Every core model, imported in one place so Alembic and the app see the whole schema."""

from cdp.models.audit import AuditEntry
from cdp.models.consent import ConsentRecord, ConsentState
from cdp.models.content import ContentVersion  # noqa: F401  (registers the content tables)
from cdp.models.events import Event
from cdp.models.hcp import HcpProfile  # noqa: F401  (registers the doctor engagement tables)
from cdp.models.identity import BlockedIdentifier, IdentityConflict, Merge
from cdp.models.ingest import InboundBatch, OutboxBatch, Violation
from cdp.models.jobs import JobRun
from cdp.models.loyalty import Partner  # noqa: F401  (registers the loyalty tables)
from cdp.models.privacy import PrivacyRequest  # noqa: F401  (registers the privacy tables)
from cdp.models.profiles import Identity, Profile
from cdp.models.purchases import PurchaseLine
from cdp.models.sources import Source
from cdp.models.tokens import ApiToken
from cdp.models.users import ROLES, User, UserSession

__all__ = [
    "ROLES",
    "ApiToken",
    "BlockedIdentifier",
    "ConsentRecord",
    "ConsentState",
    "IdentityConflict",
    "Merge",
    "InboundBatch",
    "OutboxBatch",
    "Violation",
    "AuditEntry",
    "Event",
    "Identity",
    "JobRun",
    "Profile",
    "PurchaseLine",
    "Source",
    "User",
    "UserSession",
]
