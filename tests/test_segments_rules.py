"""The rule language: published schema, validation messages, semantics, dependencies."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from segments.compiler import analyze
from segments.conditions import PLANNED, REGISTRY, Context, Facts
from segments.conditions.profile import birthday_days
from segments.definition import SCHEMA_PATH, build_schema, schema_text, validate
from segments.sqljson import SqlJson

DOCS = Path(__file__).resolve().parent.parent / "docs" / "segments.md"


def test_the_published_schema_file_is_current():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "segments/schema/segment.schema.json is out of date: run `cdp segments schema --write`"
    )
    jsonschema.Draft202012Validator.check_schema(build_schema())


def doc_examples() -> list[dict]:
    """Every ```json block of docs/segments.md that is a definition (has a "rule")."""
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    found = [json.loads(block) for block in blocks]
    return [block for block in found if isinstance(block, dict) and "rule" in block]


def test_every_documented_example_validates_against_the_published_schema():
    examples = doc_examples()
    assert len(examples) >= 10
    published = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    referable = {1: {"rule": {"and": []}}, 2: {"rule": {"and": []}}}
    for example in examples:
        assert list(published.iter_errors(example)) == [], example
        assert validate(example, referable.get) == [], example


def test_every_condition_type_is_documented_with_its_example():
    text = DOCS.read_text(encoding="utf-8")
    for name, cls in REGISTRY.items():
        assert f"`{name}`" in text, name
        assert validate({"rule": cls.example}, lambda _id: {"rule": {"and": []}}) == [], name
    for name in PLANNED:
        assert f"`{name}`" in text, name


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ({"type": "trait", "trait": "city", "op": "equals"}, "/rule", "'value' is required"),
        ({"type": "trait", "trait": "a-b", "op": "exists"}, "/rule/trait", "is not valid: a key"),
        ({"type": "trait", "trait": "a", "op": "exists", "value": 1}, "/rule/value", "takes no"),
        ({"type": "trait", "trait": "a", "op": "in", "value": []}, "/rule/value", "non-empty"),
        ({"type": "age", "op": "between", "value": [50, 40]}, "/rule/value", "lower bound"),
        ({"type": "event_count", "event": "x", "op": "gte", "value": "2"}, "/rule/value", "type"),
        (
            {"type": "event_count", "event": "x", "op": "gte", "value": 1, "within": {"to": "x"}},
            "/rule/within/to",
            "date-time with a time zone",
        ),
        ({"type": "birthday", "within_days": 400}, "/rule/within_days", "maximum"),
        ({"type": "journey", "journey_id": 3}, "/rule", "'state' is required"),
        ({"type": "coupon"}, "/rule", "'state' is required"),
        ({"type": "points", "op": "gte", "value": [1, 2]}, "/rule/value", "integer"),
        ({"type": "propensity", "model": "m"}, "/rule", "'op' is required"),
        ({"type": "nope"}, "/rule/type", "unknown condition type 'nope'"),
        ({"type": "consent", "purpose": "marketing", "colour": 1}, "/rule", "unknown key(s)"),
        ({"and": [{"or": "x"}]}, "/rule/and/0/or", "must be a list"),
        ({"and": [], "or": []}, "/rule", "exactly one of"),
        ({"not": {"type": "segment", "segment_id": 9}}, "/rule/not/segment_id", "does not exist"),
    ],
)
def test_problems_name_the_path_and_what_is_wrong(rule, path, message):
    problems = validate({"rule": rule})
    assert problems, rule
    assert problems[0].path == path
    assert message in problems[0].message


def test_definitions_must_be_objects_with_a_rule():
    assert validate([]) and validate({})[0].message == "'rule' is required"
    assert validate({"rule": {"and": []}, "colour": "red"})[0].message == "unknown key(s): colour"
    deep = {"and": []}
    for _ in range(10):
        deep = {"not": deep}
    assert "nested at most" in validate({"rule": deep})[0].message


def test_dependencies_health_data_and_time():
    def analysed(rule, segments=None):
        return analyze({"rule": rule}, (segments or {}).get)

    trait = analysed({"type": "trait", "trait": "city", "op": "exists"})
    assert trait.depends_on == {"profile", "new_profile", "merge"}
    assert (trait.health_data, trait.time_based) == (False, False)
    reads = analysed(
        {"type": "event_count", "event": "article_read", "within": {"last_days": 7}, "op": "gte",
         "value": 1}
    )  # fmt: skip
    assert "event:article_read" in reads.depends_on and reads.time_based
    assert not reads.health_data
    # Medicine purchases, or filters on medicine properties, are health data.
    bought = analysed({"type": "event_count", "event": "pos_purchase", "op": "gte", "value": 1})
    assert bought.health_data and "consent" in bought.depends_on
    rx = {"property": "items", "any": [{"property": "rx", "op": "equals", "value": True}]}
    custom = analysed({"type": "event_count", "event": "x", "where": [rx], "op": "gte", "value": 1})
    assert custom.health_data
    # References carry their dependencies along; cycles are refused.
    segments = {1: {"rule": {"type": "refill_lapse", "grace_days": 30}}}
    outer = analysed({"not": {"type": "segment", "segment_id": 1}}, segments)
    assert outer.references == {1} and outer.health_data and outer.time_based
    assert "event:pos_purchase" in outer.depends_on
    cyclic = {1: {"rule": {"type": "segment", "segment_id": 2}}, 2: {"rule": {"type": "segment", "segment_id": 1}}}  # fmt: skip
    problems = validate({"rule": {"type": "segment", "segment_id": 1}}, cyclic.get)
    assert "cycle" in problems[0].message


def ctx_at(now: datetime) -> Context:
    return Context(now=now, dialect="sqlite")


def test_birthdays_on_29_february_count_on_28_february_in_common_years():
    common = ctx_at(datetime(2026, 2, 28, 2, tzinfo=UTC))  # 28 Feb 2026, Shanghai
    assert birthday_days(common, 0) == ["02-28", "02-29"]
    leap = ctx_at(datetime(2028, 2, 28, 2, tzinfo=UTC))
    assert birthday_days(leap, 0) == ["02-28"]
    assert birthday_days(leap, 1) == ["02-28", "02-29"]
    facts = Facts(1, "patient", {"birth_date": "2000-02-29"})
    rule = REGISTRY["birthday"]({"type": "birthday", "within_days": 0})
    assert rule.evaluate(facts, common) and not rule.evaluate(facts, leap)


def test_the_local_day_is_the_platform_time_zone():
    # 17:30 UTC on 28 February is already 1 March in Shanghai.
    ctx = ctx_at(datetime(2026, 2, 28, 17, 30, 45, 123, tzinfo=UTC))
    assert ctx.today.isoformat() == "2026-03-01"
    assert ctx.now.microsecond == 0 and ctx.offset_minutes == 480
    facts = Facts(1, "patient", {"birth_date": "1980-03-01"})
    age = REGISTRY["age"]({"type": "age", "op": "equals", "value": 46})
    assert age.evaluate(facts, ctx)


def test_refill_lapse_after_the_run_out_date_plus_grace():
    now = datetime(2026, 6, 1, 4, tzinfo=UTC)  # 1 June, Shanghai
    ctx = ctx_at(now)
    item = {"drug_code": "D001", "days_of_supply": 30}
    rule = REGISTRY["refill_lapse"](
        {"type": "refill_lapse", "drug_codes": ["D001"], "grace_days": 10}
    )

    def bought(day: str) -> Facts:
        ts = datetime.fromisoformat(f"{day}T10:00:00+08:00")
        return Facts(1, "patient", {}, events=[("pos_purchase", ts, {"items": [item]})])

    # Bought 22 April: runs out 22 May; +10 days grace = 1 June: lapsed today.
    assert rule.evaluate(bought("2026-04-22"), ctx)
    # Bought 23 April: covered until 2 June.
    assert not rule.evaluate(bought("2026-04-23"), ctx)
    # Never bought: not a lapse.
    assert not rule.evaluate(Facts(1, "patient", {}), ctx)


def test_json_paths_are_plain_keys_only():
    sql = SqlJson("sqlite")
    with pytest.raises(ValueError):
        sql.json_type(None, ("a'; drop table profiles; --",))
    with pytest.raises(ValueError):
        SqlJson("mysql")
