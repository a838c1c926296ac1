"""WeChat official-account push: URL check, plain and safe mode (built with wechatpy), the
protocol's test vectors, event mapping, dedupe of WeChat's retries, and hostile bodies."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.parser import parse_message as wechatpy_parse
from wechatpy.utils import WeChatSigner

from cdp.actors import SYSTEM
from cdp.db import db
from cdp.models import Event, Identity
from cdp.sources import create_source
from connectors.models import ConnectorError
from connectors.wechat import parse_message
from connectors.wechat_events import classify
from connectors.xmlsafe import parse_xml

APP_ID = "wx0123456789abcdef"
TOKEN = "TOKEN"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
OPENID = "oyORnuP8q7ou2gfYjqLzSIWZf0rs"


def make_source(app, **options) -> str:
    opts = {"app_id": APP_ID, "token": TOKEN, "aes_key": AES_KEY, "app_secret": "s3cret"}
    opts.update(options)
    with app.app_context():
        source, _ = create_source(SYSTEM, "OA", "wechat", opts)
        return source.id


@pytest.fixture
def source_id(app) -> str:
    return make_source(app)


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def plain_query(timestamp="1700000000", nonce="123456789", token=TOKEN) -> dict:
    return {"signature": sign(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}


def event_xml(event: str, openid=OPENID, created=1700000000, **fields) -> str:
    extra = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
    return (
        f"<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
        f"</FromUserName><CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event>{extra}</xml>"
    )


def text_xml(content="你好", msg_id="6054768590064713728", openid=OPENID) -> str:
    return (
        f"<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
        "</FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def safe_push(xml: str, timestamp="1700000000", nonce="987654321", app_id=APP_ID):
    """(query, body) of a safe-mode push as WeChat sends it, encrypted by wechatpy."""
    crypto = WeChatCrypto(TOKEN, AES_KEY, app_id)
    reply = parse_xml(crypto.encrypt_message(xml, nonce, timestamp))
    body = (
        "<xml><ToUserName><![CDATA[gh_123]]></ToUserName>"
        f"<Encrypt><![CDATA[{reply['Encrypt']}]]></Encrypt></xml>"
    )
    query = {**plain_query(timestamp, nonce), "encrypt_type": "aes"}
    query["msg_signature"] = reply["MsgSignature"]
    return query, body


def events(app, source_id) -> list[Event]:
    with app.app_context():
        return list(
            db.session.scalars(
                sa.select(Event).where(Event.source_id == source_id).order_by(Event.id)
            )
        )


# --- protocol vectors ---------------------------------------------------------------------


def test_signature_vectors_from_the_protocol_notes():
    assert sign("TOKEN", "1700000000", "123456789") == "482932830d48181841632b4f8ec7d5d25c21bcfd"
    assert sign("pamtest", "1409304348", "xxxxxx") == "76480565cbe296026c53aaacd1ad523a1ddba24f"


def test_official_safe_mode_vector_c_through_the_endpoint(app, client):
    """The official Python sample's encrypted text message, posted as WeChat would."""
    encrypt = (
        "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6"
        "F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T33"
        "2jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCg"
        "avjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6Oewp"
        "usjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
    )
    source_id = make_source(app, app_id="wx2c2769f8efd9abc2", token="spamtest")
    query = {
        "encrypt_type": "aes",
        "timestamp": "1409735669",
        "nonce": "1320562132",
        "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa",
    }
    body = f"<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    response = client.post(f"/connectors/wechat/{source_id}", query_string=query, data=body)
    assert response.status_code == 200 and response.data == b"success"
    [event] = events(app, source_id)
    assert event.name == "message_received"
    assert event.message_id == "wx:msg:6054768590064713728"
    assert event.properties["content"] == "abcdteT"
    # Same vector with the wrong app id: the trailing appid check refuses it.
    other = make_source(app, app_id="wx0000000000000000", token="spamtest")
    response = client.post(f"/connectors/wechat/{other}", query_string=query, data=body)
    assert response.status_code == 403


def test_url_verification_plain_and_encrypted_echostr(client, app, source_id):
    query = {**plain_query(), "echostr": "1616140317555161061"}
    response = client.get(f"/connectors/wechat/{source_id}", query_string=query)
    assert response.status_code == 200 and response.data == b"1616140317555161061"
    query["signature"] = "0" * 40
    assert client.get(f"/connectors/wechat/{source_id}", query_string=query).status_code == 403
    # Vector B (official Java testVerifyUrl): the echostr is encrypted.
    vector_b = make_source(
        app,
        app_id="wx5823bf96d3bd56c7",
        token="QDG6eK",
        aes_key="jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    )
    query = {
        "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
        "timestamp": "1409659589",
        "nonce": "263014780",
        "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==",
    }
    response = client.get(f"/connectors/wechat/{vector_b}", query_string=query)
    assert response.status_code == 200 and response.data == b"1616140317555161061"


def test_extra_vector_subscribe_from_qr_decrypts_with_its_signature():
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    xml = event_xml("subscribe", EventKey="qrscene_HCP_42", Ticket="TICKET")
    prp = PrpCrypto(crypto.key)
    prp.get_random_string = lambda: "0123456789abcdef"
    encrypted = prp.encrypt(xml, APP_ID).decode()
    assert (
        crypto.decrypt_message(
            {"Encrypt": encrypted},
            sign(TOKEN, "1700000000", "987654321", encrypted),
            "1700000000",
            "987654321",
        )
        == xml
    )


# --- mapping ------------------------------------------------------------------------------


SAMPLES = {
    "subscribe": (event_xml("subscribe", EventKey=""), "subscribe"),
    "qr": (event_xml("subscribe", EventKey="qrscene_123123", Ticket="TICKET"), "subscribe"),
    "unsubscribe": (event_xml("unsubscribe"), "unsubscribe"),
    "scan": (event_xml("SCAN", EventKey="123123", Ticket="TICKET"), "qr_scan"),
    "click": (event_xml("CLICK", EventKey="EVENTKEY"), "menu_click"),
    "view": (event_xml("VIEW", EventKey="www.qq.com"), "menu_view"),
    "location": (
        event_xml("LOCATION", Latitude="23.137466", Longitude="113.352425", Precision="119.385040"),
        "location_report",
    ),
    "template": (
        event_xml("TEMPLATESENDJOBFINISH", MsgID="200163836", Status="failed:user block"),
        "template_delivery",
    ),
    "text": (text_xml(), "message_received"),
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_samples_map_to_canonical_events_and_agree_with_wechatpy(sample):
    xml, name = SAMPLES[sample]
    [message] = parse_message(xml, APP_ID)
    assert message["event"] == name
    assert message["context"]["externalIds"] == [
        {"type": "wechat_openid", "id": OPENID, "collection": APP_ID}
    ]
    ours = classify(parse_xml(xml))
    theirs = wechatpy_parse(xml)
    assert ours[0] == theirs.type
    if theirs.type == "event":
        assert ours[1] == theirs.event


def test_mapping_details():
    [qr] = parse_message(SAMPLES["qr"][0], APP_ID)
    assert qr["properties"]["qr_scene"] == "123123"
    assert qr["context"]["campaign"] == {"source": "wechat", "medium": "qrcode", "name": "123123"}
    assert qr["traits"] == {"wechat_subscribed": True}
    [template] = parse_message(SAMPLES["template"][0], APP_ID)
    assert template["properties"] == {
        "channel": "wechat",
        "app_id": APP_ID,
        "msg_id": "200163836",
        "status": "failed:user block",
        "delivered": False,
    }
    [location] = parse_message(SAMPLES["location"][0], APP_ID)
    assert location["properties"]["latitude"] == 23.14  # coarsened: whereabouts are sensitive
    popup = (
        "<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>"
        "<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent>"
        "<List><TemplateId>T1</TemplateId><SubscribeStatusString>accept</SubscribeStatusString>"
        "<PopupScene>2</PopupScene></List><List><TemplateId>T2</TemplateId>"
        "<SubscribeStatusString>reject</SubscribeStatusString><PopupScene>2</PopupScene></List>"
        "</SubscribeMsgPopupEvent></xml>"
    )
    results = parse_message(popup, APP_ID)
    assert [(m["event"], m["properties"]["template_id"]) for m in results] == [
        ("subscribe_accepted", "T1"),
        ("subscribe_refused", "T2"),
    ]
    assert len({m["messageId"] for m in results}) == 2


# --- the endpoint -------------------------------------------------------------------------


def test_plain_push_is_committed_then_acked_and_retries_dedupe(client, app, source_id):
    xml = SAMPLES["qr"][0]
    url = f"/connectors/wechat/{source_id}"
    for _ in range(3):  # WeChat retries three times when it did not get an answer in time
        response = client.post(url, query_string=plain_query(), data=xml)
        assert response.status_code == 200 and response.data == b"success"
    [event] = events(app, source_id)
    assert event.name == "subscribe" and event.properties["qr_scene"] == "123123"
    assert event.message_id == f"wx:{OPENID}:1700000000:subscribe:qrscene_123123"
    with app.app_context():
        ident = db.session.scalar(sa.select(Identity).where(Identity.type == "wechat_openid"))
        assert (ident.namespace, ident.value_index) == (APP_ID, OPENID)


def test_safe_mode_push_built_with_wechatpy(client, app, source_id):
    query, body = safe_push(SAMPLES["unsubscribe"][0])
    response = client.post(f"/connectors/wechat/{source_id}", query_string=query, data=body)
    assert response.status_code == 200 and response.data == b"success"
    [event] = events(app, source_id)
    assert event.name == "unsubscribe"


def test_bad_signatures_are_refused_and_nothing_is_stored(client, app, source_id):
    url = f"/connectors/wechat/{source_id}"
    bad = {**plain_query(), "signature": "f" * 40}
    assert client.post(url, query_string=bad, data=text_xml()).status_code == 403
    query, body = safe_push(text_xml())
    assert (
        client.post(url, query_string={**query, "msg_signature": "0" * 40}, data=body).status_code
        == 403
    )
    # An encrypted message for another app id (appid check after decryption).
    query, body = safe_push(text_xml(), app_id="wx9999999999999999")
    assert client.post(url, query_string=query, data=body).status_code == 403
    assert events(app, source_id) == []
    with app.app_context():
        reasons = [e.reason for e in db.session.scalars(sa.select(ConnectorError))]
    assert len(reasons) == 3 and all("match" in r or "app id" in r for r in reasons)


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    "<xml><ToUserName>&lol2;</ToUserName></xml>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>&xxe;</ToUserName><FromUserName>o</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"
)


@pytest.mark.parametrize(
    "body, status",
    [
        (BOMB, 400),
        (XXE, 400),
        ("<xml><FromUserName>o", 400),
        ("<xml><ToUserName>gh</ToUserName></xml>", 400),  # no openid
        ("<xml>" + "<A>x</A>" * 20000 + "</xml>", 413),
    ],
)
def test_hostile_or_malformed_bodies(client, app, source_id, body, status):
    response = client.post(f"/connectors/wechat/{source_id}", query_string=plain_query(), data=body)
    assert response.status_code == status
    assert response.get_json()["message"]
    assert events(app, source_id) == []


def test_encrypted_bomb_is_refused_after_decryption(client, app, source_id):
    query, body = safe_push(BOMB)
    response = client.post(f"/connectors/wechat/{source_id}", query_string=query, data=body)
    assert response.status_code == 400 and "DTD" in response.get_json()["message"]


def test_unknown_source_and_wrong_kind(client, app):
    assert client.post("/connectors/wechat/src_nope", data="<xml/>").status_code == 404


def test_database_down_answers_503_so_wechat_retries(client, app, source_id, monkeypatch):
    from cdp.exceptions import Unavailable
    from connectors import base

    def down(*args, **kwargs):
        raise Unavailable("down")

    monkeypatch.setattr(base, "ingest", down)
    response = client.post(
        f"/connectors/wechat/{source_id}", query_string=plain_query(), data=text_xml()
    )
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_sources_cli_prints_the_push_url(runner, app):
    result = runner.invoke(
        args=[
            "sources",
            "create",
            "--name",
            "OA",
            "--kind",
            "wechat",
            "--option",
            f"app_id={APP_ID}",
            "--option",
            "token=abc123",
            "--option",
            f"aes_key={AES_KEY}",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    import json

    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["urls"]["push"].endswith(f"/connectors/wechat/{out['id']}")


def test_unsubscribe_revokes_wechat_marketing_consent_downstream(client, app, source_id):
    """End to end with the consent-from-events processor (cdp.privacy.consent_events)."""
    from cdp.consent import current_consents
    from cdp.ingest.tasks import process_pending

    url = f"/connectors/wechat/{source_id}"
    query, body = safe_push(event_xml("unsubscribe", created=1700000100))
    assert client.post(url, query_string=query, data=body).status_code == 200
    with app.app_context():
        process_pending()
        [event] = db.session.scalars(sa.select(Event).where(Event.source_id == source_id))
        assert current_consents(event.profile_id)[("marketing", "wechat")] == "withdrawn"
