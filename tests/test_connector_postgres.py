"""The connectors on PostgreSQL: nonce replay refusal, cursor claims, counters, token upsert,
a WeChat push and a POS upload end to end."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cdp import jobs
from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import Event
from cdp.sources import create_source
from connectors import replay, wechat_pull
from connectors.health import source_health
from tests.conftest import make_app, migrate
from tests.test_connector_pos import SECRET, post, sale
from tests.test_connector_wechat import AES_KEY, APP_ID, TOKEN, event_xml, safe_push

pytestmark = pytest.mark.services


@pytest.fixture
def pg_app(postgres_url):
    app = make_app(postgres_url)
    migrate(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_connectors_on_postgresql(pg_app):
    client = pg_app.test_client()
    with pg_app.app_context():
        wechat_id = create_source(
            SYSTEM,
            "OA",
            "wechat",
            {"app_id": APP_ID, "token": TOKEN, "aes_key": AES_KEY, "app_secret": "s"},
        )[0].id
        pos_id = create_source(SYSTEM, "POS", "pos", {"partner": "c1", "secret": SECRET})[0].id
        assert replay.claim(pos_id, "nonce-pg-1") is True
        assert replay.claim(pos_id, "nonce-pg-1") is False
        first, second = (jobs.create_job(SYSTEM, "test").id for _ in range(2))
        assert wechat_pull._claim(wechat_id, first) is True
        assert wechat_pull._claim(wechat_id, second) is False  # another live run holds it
        assert wechat_pull._claim(wechat_id, first) is True  # the same job, retried by RQ
    query, body = safe_push(event_xml("subscribe", EventKey="qrscene_HCP_42", Ticket="T"))
    for _ in range(2):
        response = client.post(f"/connectors/wechat/{wechat_id}", query_string=query, data=body)
        assert response.status_code == 200 and response.data == b"success"
    assert post(client, pos_id, {"transactions": [sale()]}, nonce="nonce-pg-2").status_code == 200
    assert post(client, pos_id, {"transactions": [sale()]}, nonce="nonce-pg-2").status_code == 409
    with pg_app.app_context():
        names = set(db.session.scalars(sa.select(Event.name)))
        assert names == {"subscribe", "pos_purchase"}
        health = source_health(wechat_id)
        assert health["events_last_hour"] == 1 and health["duplicates_last_hour"] == 1
        assert source_health(pos_id)["errors_last_hour"] == 1
