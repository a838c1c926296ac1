"""The Models pages: list and training form, a model with charts, scoring, top-N% segments."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import JobRun
from segments.models import Segment
from segments.propensity import service
from tests.conftest import csrf_token_from, make_user
from tests.test_propensity_features import TARGET, build_world
from tests.test_ui import Page, _html, _switch_locale

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def world(app):
    with app.app_context():
        world = build_world()
        spec = service.make_spec("coupon", TARGET, "60d", world.day(100), algorithm="logistic")
        service.train_model(SYSTEM, spec, activate=True)
        return world


def post(client, page: str, url: str, data: dict):
    token = csrf_token_from(client.get(page).get_data(as_text=True))
    return client.post(url, data={**data, "csrf_token": token})


def test_list_and_detail_with_charts(client, auth, admin, world):
    auth.login()
    html = _html(client.get("/models"))
    page = Page(html)
    assert page.heading == "模型" and "coupon" in page.texts
    assert 'data-testid="model-coupon"' in html and "style=" not in html
    html = _html(client.get("/models/coupon"))
    for chart in ("lift-chart", "calibration-plot", "importances", "score-distribution"):
        assert f'data-testid="{chart}"' in html
    assert html.count("<rect") > 20 and "<polyline" in html
    assert "style=" not in html and "<script" not in html  # CSP: no inline styles or scripts
    assert 'data-testid="version-1"' in html and 'data-testid="create-segment"' in html
    assert client.get("/models/nope").status_code == 404


def test_train_from_the_form_queues_a_job_or_shows_the_error(app, client, auth, admin, world):
    auth.login()
    form = {"name": "coupon", "target_event": TARGET, "horizon": "60d", "cutoff": world.day(90),
            "profile_kind": "patient", "algorithm": "logistic", "where": ""}  # fmt: skip
    done = post(client, "/models", "/models/train", form)
    assert done.status_code == 302
    with app.app_context():
        job = db.session.scalar(sa.select(JobRun).where(JobRun.kind == "models-train"))
        assert job.status == "queued" and job.params["name"] == "coupon"
    refused = post(
        client, "/models", "/models/train", {**form, "name": "x", "target_event": "nothing"}
    )
    assert refused.status_code == 422
    assert "never occurs" in refused.get_data(as_text=True)
    broken = post(client, "/models", "/models/train", {**form, "name": "x", "where": "[{"})
    assert broken.status_code == 422 and 'data-testid="train-error"' in broken.get_data(
        as_text=True
    )


def test_score_then_create_a_segment_of_the_top_percent(app, client, auth, admin, world):
    auth.login()
    started = post(client, "/models/coupon", "/models/coupon/score", {})
    assert started.status_code == 302
    with app.app_context():
        job = db.session.scalar(sa.select(JobRun).where(JobRun.kind == "models-score"))
        from segments.propensity import tasks

        tasks.score_job(job.id)
    html = _html(client.get("/models/coupon"))
    scored = len(world.ids) - len(world.refused)
    assert f'data-testid="scored-count">{scored:,}<' in html
    created = post(
        client,
        "/models/coupon",
        "/models/coupon/segment",
        {"top_percent": "5", "segment_name": "高意向"},
    )
    assert created.status_code == 302
    with app.app_context():
        segment = db.session.scalar(sa.select(Segment).where(Segment.name == "高意向"))
        assert segment.definition["rule"] == {
            "type": "propensity",
            "model": "coupon",
            "top_percent": 5,
        }
    assert created.headers["Location"].endswith(f"/segments/{segment.id}")
    bad = post(client, "/models/coupon", "/models/coupon/segment", {"top_percent": "lots"})
    assert bad.status_code == 302


def test_activate_from_the_versions_table(app, client, auth, admin, world):
    with app.app_context():
        spec = service.make_spec("coupon", TARGET, "60d", world.day(95), algorithm="logistic")
        service.train_model(SYSTEM, spec, activate=False)
    auth.login()
    assert (
        post(client, "/models/coupon", "/models/coupon/versions/2/activate", {}).status_code == 302
    )
    html = _html(client.get("/models/coupon"))
    assert 'data-testid="version-2"' in html
    with app.app_context():
        from segments.propensity import registry

        assert registry.get_version(registry.get_model("coupon")).version == 2


def test_roles(app, client, auth, world):
    make_user(app, "reviewer", "reviewer@test.cn")
    auth.login("reviewer@test.cn")
    assert client.get("/models").status_code == 403
    auth.logout()
    make_user(app, "marketer", "marketer@test.cn")
    auth.login("marketer@test.cn")
    html = _html(client.get("/models"))
    assert "/models/train" not in html  # marketers read models; analysts train them
    assert 'data-testid="score-now"' not in _html(client.get("/models/coupon"))
    auth.logout()
    make_user(app, "analyst", "analyst@test.cn")
    auth.login("analyst@test.cn")
    assert "/models/train" in _html(client.get("/models"))


def test_english_pages(client, auth, admin, world):
    auth.login()
    _switch_locale(client, "en", page="/models")
    page = Page(_html(client.get("/models/coupon")))
    assert "Lift by decile (v1)" in page.texts and "Calibration" in page.texts
