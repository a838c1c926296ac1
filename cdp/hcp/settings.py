"""Doctor engagement settings: knowledge dimensions, tier rules, scoring; app config overrides."""

from __future__ import annotations

from flask import current_app

DEFAULTS = {
    # The knowledge dimensions quiz questions are tagged with (order = the radar chart's axes).
    "HCP_KNOWLEDGE_DIMENSIONS": (
        "diagnosis",
        "treatment",
        "drug_class_choice",
        "brand_choice",
        "product_usage",
    ),
    # Running score: new = old × (1 − w) + quiz × w; the first quiz sets it outright.
    "HCP_KNOWLEDGE_WEIGHT": 0.5,
    # A running score below this is a weak dimension (segments: {"weak": true}).
    "HCP_WEAK_BELOW": 60,
    # A doctor "improved" in a dimension when the running score rose by at least this much.
    "HCP_IMPROVED_BY": 5,
    # Tier rules, first match wins. ``when`` holds field -> allowed values (title, city_tier,
    # society_role) and count -> minimum (talks_gte: meetings spoken at, attended_gte: meetings
    # completed, both in the last 365 days). Never prescriptions or sales (anti-bribery).
    "HCP_TIER_RULES": (
        {"tier": "national_kol", "when": {"society_role": ["national"]}},
        {"tier": "regional_kol", "when": {"society_role": ["provincial"]}},
        {"tier": "regional_kol", "when": {"title": ["主任医师"], "talks_gte": 3}},
        {"tier": "hospital_kol", "when": {"title": ["主任医师", "副主任医师"], "talks_gte": 1}},
        {"tier": "koi", "when": {"attended_gte": 3}},
        {"tier": "general", "when": {}},
    ),
}


def setting(name: str):
    """A doctor engagement setting from the app config, or its default."""
    return current_app.config.get(name, DEFAULTS[name])


def dimensions() -> tuple[str, ...]:
    return tuple(setting("HCP_KNOWLEDGE_DIMENSIONS"))
