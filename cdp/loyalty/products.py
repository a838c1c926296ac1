"""The product catalogue: which drug codes are prescription (Rx), 甲类/乙类 OTC or not drugs.

Coupon campaigns and points rules ask it before anything is promised: an unknown code is
refused rather than guessed, because a guess could put a coupon on a prescription drug.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import ValidationFailed
from cdp.loyalty.common import dialect_insert
from cdp.models.loyalty import PRODUCT_CLASSES, Product
from cdp.seed.vocab import DRUGS

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
CLASS_NAMES = {
    "rx": "prescription (Rx) drug",
    "otc_a": "甲类 OTC drug",
    "otc_b": "乙类 OTC drug",
    "non_drug": "non-drug product",
}


def save_product(
    actor: Actor, code: str, name: str, product_class: str, approval_number: str | None = None
) -> Product:
    """Add a product or change its name/class (the Rx flag must follow the 批准文号)."""
    require(actor, "loyalty:edit")
    code = (code or "").strip()
    if not _CODE.match(code):
        raise ValidationFailed("code: 1-64 letters, digits, '.', '_' or '-'", "code")
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name is required (at most 200 characters)", "name")
    if product_class not in PRODUCT_CLASSES:
        raise ValidationFailed(
            f"product_class must be one of {', '.join(PRODUCT_CLASSES)}", "product_class"
        )
    approval_number = (approval_number or "").strip()[:32] or None
    with transaction() as session:
        product = session.get(Product, code)
        if product is None:
            product = Product(code=code)
            session.add(product)
        product.name, product.product_class = name, product_class
        product.approval_number = approval_number
        audit.record(actor, "product.save", "product", code, product_class=product_class)
    return product


def list_products() -> list[Product]:
    return list(db.session.scalars(sa.select(Product).order_by(Product.code)))


def classify(codes: list[str]) -> dict[str, Product]:
    """The catalogue entries of ``codes`` that exist."""
    codes = sorted({str(c) for c in codes})
    if not codes:
        return {}
    return {
        p.code: p for p in db.session.scalars(sa.select(Product).where(Product.code.in_(codes)))
    }


def describe(product: Product) -> str:
    return f"{product.code} ({product.name}) is a {CLASS_NAMES[product.product_class]}"


def import_demo_products(actor: Actor) -> int:
    """Load the demo generator's drugs (Rx and OTC) into the catalogue; returns how many."""

    require(actor, "loyalty:edit")
    rows = [
        {
            "code": d.code,
            "name": d.name,
            "product_class": "rx" if d.rx else ("otc_a" if d.otc_class == "甲类" else "otc_b"),
        }
        for d in DRUGS
    ]
    with transaction() as session:
        session.execute(
            dialect_insert(Product).on_conflict_do_nothing(index_elements=["code"]),
            [{**row, "created_at": utcnow()} for row in rows],
        )
        audit.record(actor, "product.import_demo", "product", None, count=len(rows))
    return len(rows)
