"""The demo patients' shopping: refills of a chronic medicine, OTC buys, at the till or online.

Purchases are POS uploads and shop orders rendered and parsed by the connectors
(``cdp.seed.wire``). Shops export no days of supply or Rx flag, so those are added to
online order lines from the demo's drug list, standing in for the product master a
deployment would look them up in: refill forecasts need them whatever the channel.
"""

from __future__ import annotations

from datetime import datetime

from cdp.seed import vocab

WINTER = (12, 1, 2)  # months cold and flu remedies sell three times as well


class Shopping:
    """Mixin of the demo generator: purchase events drawn from its RNG (``rng``, ``at``,
    ``otc_cum``) and delivered through its channels (``wire``, ``deliver``, ``mini``)."""

    def _refills(self, person, drug: vocab.Drug, start: float) -> None:
        """Buy ``drug`` whenever the last pack runs out, give or take, until the patient lapses."""
        rng = self.rng
        qty = max(1, round(30 / drug.days_of_supply))
        supply = qty * drug.days_of_supply
        style = rng.choices(("adherent", "irregular", "lapsed"), weights=(55, 25, 20))[0]
        stop = float(vocab.WINDOW_DAYS)
        if style == "lapsed":  # at least a month overdue by now: the refill-lapse signal
            stop = rng.uniform(start, max(start, vocab.WINDOW_DAYS - supply - 30))
        reminders = "miniprogram" in person.channels and rng.random() < 0.6
        day = start + rng.uniform(0, supply) if start == 0 else start
        while day <= stop:
            lines = [(drug, qty)]
            if rng.random() < 0.2:
                lines.append((rng.choice(vocab.OTC), 1))
            self._purchase(person, self.at(day), lines)
            gap = supply + rng.gauss(0, 2.0 if style == "adherent" else 5.0)
            if style == "irregular" and rng.random() < 0.3:
                gap += rng.expovariate(1 / 12)
            gap = max(gap, supply * 0.7)
            due = day + gap - rng.uniform(1, 3)
            if reminders and due <= vocab.WINDOW_DAYS and rng.random() < 0.7:
                props = {"drug_code": drug.code, "name": drug.name}
                self.mini(person, "refill_reminder_open", self.at(due), props)
            day += gap

    def _otc(self, person, start: float, end: float) -> None:
        rng = self.rng
        if person.store is None and person.platform is None:
            return
        # At least one purchase for someone only ever seen at the till or in the shop.
        for _ in range(int(rng.expovariate(0.8)) or (0 if person.events else 1)):
            ts = self.at(rng.uniform(start, end))
            winter = ts.astimezone(vocab.CST).month in WINTER
            drug = rng.choices(vocab.OTC, cum_weights=self.otc_cum[int(winter)])[0]
            self._purchase(person, ts, [(drug, rng.choice((1, 1, 2)))])
        if rng.random() < 0.08:  # an occasional prescription for an acute condition
            drug = rng.choice(vocab.ACUTE_RX)
            self._purchase(person, self.at(rng.uniform(start, end)), [(drug, 1)])

    def _purchase(self, person, ts: datetime, lines) -> None:
        rng = self.rng
        # Member phones as tills and shops hold them: mainland digits, no +86.
        phone = person.phone.removeprefix("+86") if person.phone else None
        if person.store is not None and (person.platform is None or rng.random() < 0.7):
            store = person.store
            txn_no = f"{ts.astimezone(vocab.CST):%Y%m%d}-{person.id}-{len(person.events)}"
            member = {"card_no": person.card, **({"phone": phone} if phone else {})}
            message = self.wire.pos_sale(store.chain, store.code, txn_no, ts, member, lines)
            self.deliver(person, "pos", message)
        else:
            order_id = f"{rng.randrange(10**11, 10**12)}{rng.randrange(10**6):06d}"
            message = self.wire.shop_order(
                person.platform, order_id, ts, person.buyer, lines, phone
            )
            if message is not None:
                for item in message["properties"]["items"]:
                    drug = vocab.DRUG_BY_CODE[item["drug_code"]]
                    item.update(rx=drug.rx, days_of_supply=drug.days_of_supply * item["qty"])
            self.deliver(person, "ecommerce", message)
