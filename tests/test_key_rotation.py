"""PII key rotation covers every encrypted column, and the PII key settings come from config."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cdp import create_app
from cdp.actors import SYSTEM
from cdp.config import DEFAULT_PII_KEY, ConfigError
from cdp.db import db, utcnow
from cdp.ingest import inbound
from cdp.ingest.pipeline import ingest
from cdp.loyalty import partners, syncs
from cdp.models import Event, Merge, Violation
from cdp.models.loyalty import MemberSync
from cdp.pii import PiiVault, vault
from cdp.privacy import keys
from cdp.profiles import decrypt_profile_pii, find_by_identifier
from cdp.sources import create_source, get_source, source_options
from connectors import wechat_api
from tests.conftest import make_app

OLD_KEY, NEW_KEY = "test-pii-key", "the-pii-key-of-2027-from-kms"
PHONE = "13957218364"


def _blobs(spec: keys.EncryptedColumn) -> list[bytes]:
    column = db.metadata.tables[spec.table].c[spec.column]
    return [bytes(b) for b in db.session.scalars(sa.select(column).where(column.is_not(None)))]


def _fill_every_encrypted_column(app) -> dict:
    """Write at least one value into each registered column, through the code that owns it."""
    source = create_source(SYSTEM, "公众号", "http", default_profile_kind="patient")[0]
    ingest(source, [{"type": "identify", "anonymousId": "a1", "traits": {"name": "周杰"}}])
    ingest(source, [{"type": "identify", "userId": "zj", "traits": {"phone": PHONE}}])
    ingest(source, [{"type": "identify", "userId": "zj", "anonymousId": "a1"}])  # a merge
    ingest(source, [{"type": "track", "userId": "zj"}])  # no event name: a violation
    # Acked, not resolved yet (deferred resolution): encrypted in inbound_batches.
    ingest(source, [{"type": "track", "userId": "zj", "event": "e", "messageId": "p1"}], defer=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Merge)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Violation)) == 1

    partner, _ = partners.create_partner(SYSTEM, "老百姓大药房", "lbx")
    partners.add_store(SYSTEM, partner.id, "LBX-001", "一号店", "长沙")
    members = [{"card_no": "K1", "phone": "13800000001", "name": "赵敏"}]
    rejected = syncs.start_sync(SYSTEM, partner.id, [*members, {"card_no": "K2", "phone": "1"}])
    assert rejected.rejected_encrypted is not None
    app.config["LOYALTY_SYNC_INLINE_ROWS"] = 1  # a queued upload keeps its rows encrypted
    queued = syncs.start_sync(SYSTEM, partner.id, [{"card_no": "K3"}, {"card_no": "K4"}])
    assert queued.status == "queued" and queued.rows_encrypted is not None

    # Two apps' tokens: the table's key is (app_id, kind), so this pages a composite key.
    expires = utcnow() + timedelta(hours=2)
    for app_id in ("wx-a", "wx-b"):
        wechat_api.WechatClient(app_id, "secret")._store(f"token-of-{app_id}", expires, False)

    empty = [
        f"{s.table}.{s.column}"
        for s in keys.ENCRYPTED_COLUMNS.values()
        if s.table in db.metadata.tables and keys.count_rows(s) == 0
    ]
    assert not empty, f"fill these registered columns in this test too: {empty}"
    return {"source": source.id, "rejected": rejected.id, "queued": queued.id}


def test_rotation_leaves_nothing_under_the_old_key_and_the_new_key_alone_reads_all(app):
    with app.app_context():
        made = _fill_every_encrypted_column(app)
        # Every table the rotation knows of, loyalty and connector ones included.
        assert {
            ("loyalty_member_syncs", "rows_encrypted"),
            ("loyalty_member_syncs", "rejected_encrypted"),
            ("connector_tokens", "token_encrypted"),
        } <= set(keys.ENCRYPTED_COLUMNS)
        result = keys.rotate_key(SYSTEM, NEW_KEY, batch_size=1)
        assert result["key_id"] == 2
        assert all(c["reencrypted"] >= 1 for c in result["columns"].values()), result
        assert keys.remaining(2) == 0
        for spec in keys.ENCRYPTED_COLUMNS.values():
            if spec.table in db.metadata.tables:
                assert {b[0] for b in _blobs(spec)} == {2}, spec
        new_only = PiiVault(NEW_KEY, 2, index_secret=OLD_KEY)
        assert set(keys.undecryptable(new_only).values()) == {0}
        counts = {
            f"{s.table}.{s.column}": keys.count_rows(s)
            for s in keys.ENCRYPTED_COLUMNS.values()
            if s.table in db.metadata.tables
        }
        assert keys.undecryptable(PiiVault(OLD_KEY)) == counts  # the old key reads nothing
        db.session.remove()

    # A process that only has the new key reads everything through the owning code.
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    rotated = make_app(url, PII_KEY=NEW_KEY, PII_KEY_ID=2, PII_INDEX_KEY=OLD_KEY)
    with rotated.app_context():
        assert vault().key_ids == [2]
        profile = find_by_identifier("phone", "", PHONE)  # blind index kept its key
        assert decrypt_profile_pii(profile.pii_encrypted)["name"] == "周杰"
        assert source_options(get_source(made["source"])) == {}
        assert inbound.resolve_pending() == 1 and inbound.pending_count() == 0
        assert db.session.scalar(sa.select(Event.profile_id).where(Event.message_id == "p1"))
        assert [r["row"]["card_no"] for r in syncs.rejected_rows(SYSTEM, made["rejected"])] == [
            "K2"
        ]
        assert syncs.run_sync(made["queued"]).status == "succeeded"
        assert db.session.get(MemberSync, made["queued"]).rows_encrypted is None
        wechat_api._memory.clear()  # read the token from the database, not process memory
        assert wechat_api.WechatClient("wx-a", "secret").access_token() == "token-of-wx-a"
        db.session.remove()
        db.engine.dispose()


def test_a_second_run_finishes_only_what_was_written_meanwhile(app):
    with app.app_context():
        expires = utcnow() + timedelta(hours=2)
        wechat_api.WechatClient("wx-a", "secret")._store("first", expires, False)
        keys.rotate_key(SYSTEM, NEW_KEY)
        db.session.remove()
    both = make_app(
        app.config["SQLALCHEMY_DATABASE_URI"],
        PII_KEY=NEW_KEY,
        PII_KEY_ID=2,
        PII_INDEX_KEY=OLD_KEY,
        PII_DECRYPT_KEYS=f"1:{OLD_KEY}",
    )
    with both.app_context():
        # A process still on the old key wrote a token in between.
        old = PiiVault(OLD_KEY)
        table = db.metadata.tables["connector_tokens"]
        db.session.execute(
            table.insert().values(
                app_id="wx-b",
                kind=wechat_api.TOKEN_KIND,
                token_encrypted=old.encrypt(b"second", b"wechat-token:wx-b"),
                expires_at=expires,
                fetched_at=utcnow(),
                forced_today=0,
            )
        )
        db.session.commit()
        assert keys.remaining(2) == 1
        result = keys.rotate_key(SYSTEM, NEW_KEY)
        assert (result["key_id"], result["reencrypted"]) == (2, 1)
        assert keys.remaining(2) == 0
        db.session.remove()
        db.engine.dispose()


# --- configuration ------------------------------------------------------------------------


def test_pii_key_settings_are_read_from_the_environment_once(monkeypatch):
    monkeypatch.setenv("CDP_PII_KEY", "current-key-xyz")
    monkeypatch.setenv("CDP_PII_KEY_ID", "3")
    monkeypatch.setenv("CDP_PII_DECRYPT_KEYS", "1:first-key, 2:second-key")
    monkeypatch.setenv("CDP_PII_INDEX_KEY", "first-key")
    app = create_app()
    assert app.config["PII_KEY_ID"] == 3
    assert app.config["PII_DECRYPT_KEYS"] == {1: "first-key", 2: "second-key"}
    monkeypatch.setenv("CDP_PII_KEY_ID", "9")  # later changes do not reach a running app
    pii = app.extensions["cdp.pii"]
    assert (pii.key_id, pii.key_ids, pii.index_secret) == (3, [1, 2, 3], "first-key")
    blob = PiiVault("second-key", 2).encrypt(b"x", b"aad")
    assert pii.decrypt(blob, b"aad") == b"x"


@pytest.mark.parametrize(
    ("name", "value"), [("CDP_PII_KEY_ID", "256"), ("CDP_PII_DECRYPT_KEYS", "old-key")]
)
def test_malformed_pii_key_settings_stop_the_app(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        create_app()


PRODUCTION = {
    "CDP_ENV": "production",
    "CDP_SECRET_KEY": "a-real-secret-key",
    "CDP_PII_KEY": "a-real-pii-key",
    "CDP_REDIS_URL": "redis://127.0.0.1:1/0",
}


@pytest.mark.parametrize(
    "extra",
    [
        {"CDP_PII_INDEX_KEY": DEFAULT_PII_KEY},
        {"CDP_PII_DECRYPT_KEYS": f"1:{DEFAULT_PII_KEY}", "CDP_PII_INDEX_KEY": "old-real-key"},
        {"CDP_PII_KEY_ID": "2"},  # rotated, and the index key would follow the new key
        {"CDP_PII_DECRYPT_KEYS": "1:old-real-key"},
    ],
    ids=["default-index-key", "default-decrypt-key", "rotated-no-index", "decrypting-no-index"],
)
def test_production_refuses_default_or_missing_index_keys(monkeypatch, extra):
    for name, value in {**PRODUCTION, **extra}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="CDP_PII_INDEX_KEY"):
        create_app()


def test_production_accepts_a_rotated_setup_with_its_index_key(monkeypatch):
    rotated = {
        "CDP_PII_KEY_ID": "2",
        "CDP_PII_DECRYPT_KEYS": "1:old-real-key",
        "CDP_PII_INDEX_KEY": "old-real-key",
    }
    for name, value in {**PRODUCTION, **rotated}.items():
        monkeypatch.setenv(name, value)
    app = create_app()
    assert app.extensions["cdp.pii"].index_secret == "old-real-key"
