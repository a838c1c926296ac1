"""Identifiers, reachability, consent and membership of other segments."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from cdp.consent import PURPOSES, granted_profiles
from cdp.identity.types import IDENTITY_TYPES
from cdp.models import ConsentState, Identity
from cdp.models.consent import CHANNELS
from segments.conditions.base import (
    PROFILES,
    Condition,
    Context,
    condition_schema,
    register,
    scoped,
)

IDENTITIES = Identity.__table__
# How a channel reaches someone: the identifier its messages are addressed to.
CHANNEL_IDENTIFIERS = {
    "wechat": "wechat_openid",
    "miniprogram": "miniprogram_openid",
    "sms": "phone",
    "email": "email",
}
NAMESPACE = {"type": "string", "minLength": 1, "maxLength": 64}


class CompileError(ValueError):
    """A definition that validated once no longer compiles (a referenced segment is gone)."""


def has_consent(consents: dict, purpose: str, channel: str) -> bool:
    """Python twin of ``cdp.consent.granted_profiles``: a grant and no withdrawal."""
    channels = (channel, "*") if channel != "*" else ("*",)
    if any(consents.get((purpose, c)) == "withdrawn" for c in channels):
        return False
    return any(consents.get((purpose, c)) == "granted" for c in channels)


def consented(ctx: Context, purpose: str, channel: str = "*"):
    """SELECT of profile ids with a current grant: ``cdp.consent.granted_profiles``; for a
    real-time check of a few profiles, the same query with both halves restricted to them
    (so the withdrawals are looked up by key, not scanned)."""
    if ctx.scope is None and not ctx.scope_table:
        return granted_profiles(purpose, channel)
    channels = (channel, "*") if channel != "*" else ("*",)

    def with_status(status: str):
        query = sa.select(ConsentState.profile_id).where(
            ConsentState.purpose == purpose,
            ConsentState.channel.in_(channels),
            ConsentState.status == status,
        )
        return scoped(query, ConsentState.profile_id, ctx)

    return with_status("granted").where(ConsentState.profile_id.not_in(with_status("withdrawn")))


def _consented(ctx: Context, purpose: str, channel: str):
    return PROFILES.c.id.in_(consented(ctx, purpose, channel))


def _has_identifier(ctx: Context, type_: str, namespace: str | None):
    """EXISTS per profile (by ix_identities_profile_id), not IN over every identifier of the
    type: a common type (phone, openid) has a row for most profiles, fetched one by one."""
    tests = [IDENTITIES.c.profile_id == PROFILES.c.id, IDENTITIES.c.type == type_]
    if namespace is not None:
        tests.append(IDENTITIES.c.namespace == namespace)
    return sa.exists().where(*tests)


@register
class HasIdentifier(Condition):
    type = "identifier"
    label = "Has an identifier"
    group = "reach"
    schema = condition_schema(
        {"identifier": {"enum": sorted(IDENTITY_TYPES)}, "namespace": NAMESPACE}, ["identifier"]
    )
    example = {
        "type": "identifier",
        "identifier": "wechat_openid",
        "namespace": "wx5d3c2b1a0f9e8d7c",
    }

    def depends_on(self):
        return {"identities"}

    def compile(self, ctx):
        return _has_identifier(ctx, self.node["identifier"], self.node.get("namespace"))

    def evaluate(self, facts, ctx):
        wanted, namespace = self.node["identifier"], self.node.get("namespace")
        return any(
            t == wanted and (namespace is None or ns == namespace) for t, ns in facts.identities
        )


@register
class Reachable(Condition):
    """Has the channel's identifier and a current marketing consent on that channel."""

    type = "reachable"
    label = "Reachable on a channel"
    group = "reach"
    schema = condition_schema(
        {"channel": {"enum": sorted(CHANNEL_IDENTIFIERS)}, "app_id": NAMESPACE}, ["channel"]
    )
    example = {"type": "reachable", "channel": "wechat"}

    def depends_on(self):
        return {"identities", "consent"}

    def compile(self, ctx):
        channel = self.node["channel"]
        return sa.and_(
            _has_identifier(ctx, CHANNEL_IDENTIFIERS[channel], self.node.get("app_id")),
            _consented(ctx, "marketing", channel),
        )

    def evaluate(self, facts, ctx):
        channel, app_id = self.node["channel"], self.node.get("app_id")
        wanted = CHANNEL_IDENTIFIERS[channel]
        reachable = any(
            t == wanted and (app_id is None or ns == app_id) for t, ns in facts.identities
        )
        return reachable and has_consent(facts.consents, "marketing", channel)


@register
class Consent(Condition):
    type = "consent"
    label = "Consent"
    group = "reach"
    schema = condition_schema(
        {
            "purpose": {"enum": list(PURPOSES)},
            "channel": {"enum": list(CHANNELS), "default": "*"},
            "granted": {"type": "boolean", "default": True},
        },
        ["purpose"],
    )
    example = {"type": "consent", "purpose": "marketing", "channel": "wechat", "granted": True}

    def depends_on(self):
        return {"consent"}

    def compile(self, ctx):
        test = _consented(ctx, self.node["purpose"], self.node.get("channel", "*"))
        return test if self.node.get("granted", True) else sa.not_(test)

    def evaluate(self, facts, ctx):
        state = has_consent(facts.consents, self.node["purpose"], self.node.get("channel", "*"))
        return state == self.node.get("granted", True)


@register
class SegmentMember(Condition):
    """Matches the rule of another segment, evaluated now (not its stored membership).

    References must not form a cycle; saving a definition that would is refused.
    """

    type = "segment"
    label = "In another segment"
    group = "reach"
    schema = condition_schema({"segment_id": {"type": "integer", "minimum": 1}}, ["segment_id"])
    example = {"type": "segment", "segment_id": 1}

    def depends_on(self):
        return set()  # the referenced rule's dependencies are added by the analysis

    def references(self):
        return {self.node["segment_id"]}

    def problems(self, loader):
        if loader(self.node["segment_id"]) is None:
            return [("segment_id", f"segment {self.node['segment_id']} does not exist")]
        return []

    def _rule(self, ctx: Context) -> tuple[dict, Context]:
        segment_id = self.node["segment_id"]
        if segment_id in ctx.stack:
            raise CompileError(f"segment {segment_id} refers to itself through other segments")
        definition = ctx.load_segment(segment_id)
        if definition is None:
            raise CompileError(f"segment {segment_id} does not exist")
        return definition["rule"], dataclasses.replace(ctx, stack=(*ctx.stack, segment_id))

    def compile(self, ctx):
        from segments.compiler import compile_node

        rule, inner = self._rule(ctx)
        return compile_node(rule, inner)

    def evaluate(self, facts, ctx):
        from segments.compiler import evaluate_node

        rule, inner = self._rule(ctx)
        return evaluate_node(rule, facts, inner)
