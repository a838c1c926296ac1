"""JD / Tmall-style order export pull: time windows, pages, a resumable cursor.

The job walks modification-time windows (``pull_window_minutes``, default 60) from the
cursor up to five minutes ago, and each window page by page. Every page is committed
through the pipeline before the cursor (``connector_cursors``, name ``orders``:
``{"window_start", "page"}``) moves past it, so a failed run resumes at the page that
failed. Each order status becomes one event (``<platform>:<order>:<event>`` dedupes
re-reads of overlapping windows).

Dialects (``platform`` option):

- ``tmall`` / ``taobao``: TOP ``taobao.trades.sold.increment.get`` on ``{api_base}/router/rest``,
  ``sign = MD5(secret + k1v1k2v2… (sorted) + secret)`` upper-case, ``use_has_next``.
- ``jd``: ``jingdong.pop.order.search`` on ``{api_base}/routerjson`` with
  ``360buy_param_json``, same signing; ``orderTotal`` tells when the pages end.

Rate-limit answers pause the job (cursor kept); timeouts and 5xx are retried with back-off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timedelta

import requests
import sqlalchemy as sa

from cdp import jobs
from cdp.actors import SYSTEM, Actor
from cdp.auth.permissions import require
from cdp.db import db, utcnow
from cdp.exceptions import NotFound, Unavailable
from cdp.ingest.pipeline import ingest
from cdp.models import Source
from cdp.queue import PeriodicJob, enqueue, task
from cdp.sources import source_options
from connectors.ecommerce import TZ, local_time, order_message
from connectors.models import ConnectorCursor

log = logging.getLogger(__name__)
CURSOR = "orders"
JOB_KIND = "ecommerce_order_pull"
PAGE_SIZE = 100
LAG = timedelta(minutes=5)
STALE_RUN = timedelta(minutes=5)
PERIODIC = PeriodicJob(
    name="ecommerce_order_pull",
    func="connectors.ecommerce_pull.pull_due_sources",
    interval=300,
    queue="connectors",
)
TMALL_EVENTS = {
    "WAIT_BUYER_PAY": "order_created",
    "WAIT_SELLER_SEND_GOODS": "order_paid",
    "SELLER_CONSIGNED_PART": "order_shipped",
    "WAIT_BUYER_CONFIRM_GOODS": "order_shipped",
    "TRADE_FINISHED": "order_completed",
    "TRADE_CLOSED": "order_closed",
    "TRADE_CLOSED_BY_TAOBAO": "order_closed",
}
JD_EVENTS = {
    "WAIT_SELLER_STOCK_OUT": "order_paid",
    "WAIT_GOODS_RECEIVE_CONFIRM": "order_shipped",
    "FINISHED_L": "order_completed",
    "TRADE_CANCELED": "order_closed",
}
TOP_RATE_CODES = {"7", "accesscontrol.limited-by-app-access-count", "isv.call-limited"}


class PullError(Exception):
    pass


class PullRateLimited(PullError):
    pass


class Api:
    """Signed calls to a TOP/JOS-style router with retries (``sleep`` swappable in tests)."""

    def __init__(self, options: dict, sleep=time.sleep, timeout=15.0, attempts=5, backoff=1.0):
        self.options, self.sleep = options, sleep
        self.timeout, self.attempts, self.backoff = timeout, attempts, backoff
        self.base = (options.get("api_base") or "").rstrip("/")
        self.http = requests.Session()

    def sign(self, params: dict) -> str:
        secret = self.options["secret"]
        text = secret + "".join(f"{k}{params[k]}" for k in sorted(params)) + secret
        return hashlib.md5(text.encode()).hexdigest().upper()

    def call(self, path: str, params: dict) -> dict:
        params = {k: str(v) for k, v in params.items() if v is not None}
        params["sign"] = self.sign(params)
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.http.post(self.base + path, data=params, timeout=self.timeout)
                if response.status_code < 500:
                    return self._check(response.json())
                problem = f"HTTP {response.status_code}"
            except (requests.Timeout, requests.ConnectionError) as exc:
                problem = type(exc).__name__
            except ValueError:
                problem = "answer is not JSON"
            if attempt == self.attempts:
                raise PullError(f"{path}: {problem} (after {attempt} attempts)")
            self.sleep(self.backoff * 2 ** (attempt - 1))
        raise PullError("unreachable")

    @staticmethod
    def _check(data: dict) -> dict:
        error = data.get("error_response") if isinstance(data, dict) else None
        if not error:
            return data
        codes = {str(error.get("code")), str(error.get("sub_code"))}
        text = error.get("msg") or error.get("en_desc") or error.get("zh_desc") or ""
        message = f"platform error {error.get('code')} {error.get('sub_code') or ''} {text}".strip()
        if codes & TOP_RATE_CODES or "limit" in str(text).lower():
            raise PullRateLimited(message)
        raise PullError(message)


def _stamp(at: datetime) -> str:
    return at.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S")


def fetch_tmall(api: Api, start: datetime, end: datetime, page: int) -> tuple[list, bool]:
    params = {
        "method": "taobao.trades.sold.increment.get",
        "app_key": api.options.get("app_key"),
        "session": api.options.get("access_token"),
        "timestamp": _stamp(utcnow()),
        "format": "json",
        "v": "2.0",
        "sign_method": "md5",
        "fields": "tid,status,payment,created,pay_time,modified,buyer_open_uid,orders",
        "start_modified": _stamp(start),
        "end_modified": _stamp(end),
        "page_no": page,
        "page_size": PAGE_SIZE,
        "use_has_next": "true",
    }
    body = api.call("/router/rest", params).get("trades_sold_increment_get_response") or {}
    trades = (body.get("trades") or {}).get("trade") or []
    return trades, bool(body.get("has_next"))


def fetch_jd(api: Api, start: datetime, end: datetime, page: int) -> tuple[list, bool]:
    query = {
        "start_date": _stamp(start),
        "end_date": _stamp(end),
        "order_state": ",".join(JD_EVENTS),
        "optional_fields": "orderId,orderState,orderPayment,orderStartTime,modified,pin,itemInfoList",
        "page": str(page),
        "page_size": str(PAGE_SIZE),
        "dateType": "0",
    }
    params = {
        "method": "jingdong.pop.order.search",
        "app_key": api.options.get("app_key"),
        "access_token": api.options.get("access_token"),
        "timestamp": _stamp(utcnow()),
        "v": "2.0",
        "360buy_param_json": json.dumps(query, separators=(",", ":")),
    }
    body = api.call("/routerjson", params).get("jingdong_pop_order_search_responce") or {}
    result = body.get("searchorderinfo_result") or {}
    if (result.get("apiResult") or {}).get("success") is False:
        raise PullError(f"JD error {(result.get('apiResult') or {}).get('chineseErrCode', '')}")
    orders = result.get("orderInfoList") or []
    return orders, page * PAGE_SIZE < int(result.get("orderTotal") or 0)


def tmall_message(trade: dict, platform: str) -> dict | None:
    name = TMALL_EVENTS.get(str(trade.get("status")))
    if name is None:
        return None
    lines = (trade.get("orders") or {}).get("order") or []
    items = [
        {
            "drug_code": str(o.get("outer_sku_id") or o.get("outer_iid") or o.get("num_iid") or ""),
            "name": str(o.get("title") or "")[:200],
            "qty": int(o.get("num") or 1),
            "unit_price": float(o.get("price") or 0),
            "amount": float(o.get("payment") or 0),
        }
        for o in lines
    ]
    at = local_time(trade.get("modified") or trade.get("pay_time") or trade.get("created"))
    total = float(trade["payment"]) if trade.get("payment") not in (None, "") else None
    extra = {"status": str(trade.get("status"))}
    return order_message(
        platform, trade.get("tid"), name, at, items, total, trade.get("buyer_open_uid"), None, extra
    )


def jd_message(order: dict, platform: str) -> dict | None:
    name = JD_EVENTS.get(str(order.get("orderState")))
    if name is None:
        return None
    items = [
        {
            "drug_code": str(i.get("outerSkuId") or i.get("skuId") or ""),
            "name": str(i.get("skuName") or "")[:200],
            "qty": int(i.get("itemTotal") or 1),
            "unit_price": float(i.get("jdPrice") or 0),
        }
        for i in order.get("itemInfoList") or []
    ]
    at = local_time(
        order.get("modified") or order.get("paymentConfirmTime") or order.get("orderStartTime")
    )
    total = float(order["orderPayment"]) if order.get("orderPayment") not in (None, "") else None
    buyer = order.get("open_id_buyer") or order.get("pin")
    extra = {"status": str(order.get("orderState"))}
    return order_message(platform, order.get("orderId"), name, at, items, total, buyer, None, extra)


def parse_orders(orders: list[dict], platform: str) -> list[dict]:
    """Canonical messages of exported orders (TOP trades or JD orders), without HTTP."""
    convert = DIALECTS[platform][1]
    return [m for m in (convert(o, platform) for o in orders) if m]


DIALECTS = {
    "tmall": (fetch_tmall, tmall_message),
    "taobao": (fetch_tmall, tmall_message),
    "jd": (fetch_jd, jd_message),
}
api_factory = Api  # tests swap in one without back-off sleeps


def _cursor(source_id: str) -> ConnectorCursor:
    cursor = db.session.get(ConnectorCursor, (source_id, CURSOR))
    if cursor is None:
        cursor = ConnectorCursor(source_id=source_id, name=CURSOR, position={}, status="idle")
        db.session.add(cursor)
        db.session.commit()
    return cursor


def _save(cursor: ConnectorCursor, **values) -> None:
    for key, value in values.items():
        setattr(cursor, key, value)
    cursor.updated_at = utcnow()
    db.session.commit()


def run_pull(source: Source, options: dict, cursor: ConnectorCursor, job_id, now=None) -> int:
    """Walk windows and pages from the cursor up to now − lag; return the orders read."""
    fetch, convert = DIALECTS[options["platform"]]
    api = api_factory(options)
    window = timedelta(minutes=int(options.get("pull_window_minutes", 60)))
    until = (now or utcnow()) - LAG
    position = dict(cursor.position or {})
    default_start = options.get("pull_start") or (until - timedelta(days=1)).isoformat()
    start = datetime.fromisoformat(position.get("window_start") or default_start)
    start = start if start.tzinfo else start.replace(tzinfo=TZ)
    page, read = int(position.get("page") or 1), 0
    while start < until:
        end = min(start + window, until)
        while True:
            orders, more = fetch(api, start, end, page)
            messages = [m for m in (convert(o, options["platform"]) for o in orders) if m]
            if messages:
                ingest(source, messages)
            read += len(orders)
            page += 1
            if not more:
                break
            _save(cursor, position={"window_start": start.isoformat(), "page": page}, last_error="")
        start, page = end, 1
        _save(cursor, position={"window_start": start.isoformat(), "page": 1}, last_error="")
        if job_id:
            jobs.report_progress(job_id, read, f"{read} orders; up to {_stamp(start)}")
    return read


def _claim(source_id: str, job_id) -> bool:
    _cursor(source_id)
    now, table = utcnow(), ConnectorCursor
    claimed = db.session.execute(
        sa.update(table)
        .where(
            table.source_id == source_id,
            table.name == CURSOR,
            sa.or_(table.status != "running", table.updated_at < now - STALE_RUN,
                   table.job_id == job_id if job_id else sa.false()),
        )
        .values(status="running", job_id=job_id, last_started_at=now, updated_at=now)
        .returning(table.source_id)
    ).first()  # fmt: skip
    db.session.commit()
    return claimed is not None


@task
def pull_orders(source_id: str, job_id: int | None = None) -> dict:
    """Pull (or resume pulling) one shop's orders up to five minutes ago; idempotent."""
    source = db.session.get(Source, source_id)
    options = source_options(source) if source is not None else {}
    if source is None or not source.enabled or options.get("platform") not in DIALECTS:
        if job_id:
            jobs.mark_finished(job_id, "not a pullable ecommerce source", failed=True)
        return {"status": "skipped"}
    if not _claim(source_id, job_id):
        if job_id:
            jobs.mark_finished(job_id, "another pull of this shop is running", failed=True)
        return {"status": "busy"}
    cursor = _cursor(source_id)
    db.session.refresh(cursor)
    if job_id:
        jobs.mark_running(job_id)
    try:
        read = run_pull(source, options, cursor, job_id)
    except (PullError, Unavailable, sa.exc.OperationalError) as exc:
        db.session.rollback()
        status = "paused" if isinstance(exc, PullRateLimited) else "failed"
        _save(cursor, status=status, last_error=str(exc)[:500], last_finished_at=utcnow())
        if job_id:
            jobs.mark_finished(
                job_id, f"{status}: {str(exc)[:300]}; resumes from the cursor", failed=True
            )
        return {"status": status, "error": str(exc)[:300], "position": cursor.position}
    now = utcnow()
    _save(
        cursor,
        status="idle",
        runs=(cursor.runs or 0) + 1,
        last_finished_at=now,
        last_success_at=now,
    )
    if job_id:
        jobs.mark_finished(job_id, f"{read} orders read")
    return {"status": "done", "orders": read, "position": cursor.position}


def start_order_pull(actor: Actor, source_id: str):
    """Queue an order pull of an ``ecommerce`` source now; returns its JobRun."""
    require(actor, "sources:edit")
    source = db.session.get(Source, source_id)
    if source is None or source.kind != "ecommerce":
        raise NotFound("no such ecommerce source", "source_id")
    job = jobs.create_job(actor, JOB_KIND, {"source_id": source_id})
    enqueue("connectors.ecommerce_pull.pull_orders", source_id, job.id, queue="connectors")
    return job


@task
def pull_due_sources() -> list[str]:
    """Periodic: start a pull for every pullable shop whose interval has passed."""

    now, started = utcnow(), []
    for source in db.session.scalars(sa.select(Source).where(Source.kind == "ecommerce")):
        options = source_options(source)
        if (
            not source.enabled
            or options.get("platform") not in DIALECTS
            or not options.get("api_base")
        ):
            continue
        cursor = db.session.get(ConnectorCursor, (source.id, CURSOR))
        every = timedelta(minutes=int(options.get("pull_interval_minutes", 15)))
        if cursor is not None and cursor.last_started_at and cursor.last_started_at > now - every:
            continue
        start_order_pull(SYSTEM, source.id)
        started.append(source.id)
    return started
