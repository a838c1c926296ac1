"""Time `seed_demo` on a fresh temporary SQLite database and print rows per second.

    .venv/bin/python bench/seed_bench.py [--patients 100000] [--doctors N] [--seed 42]

The target: 100k patients (about a million events) in a few minutes on a 2-core box. The
channel events are built as provider payloads and parsed by the connectors (cdp.seed.wire),
so "generating rows" includes that; see docs/connectors.md, Demo data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _build_schema() -> str:
    from cdp.app import MIGRATIONS_DIR
    from cdp.db import db

    if any(Path(MIGRATIONS_DIR, "versions").glob("*.py")):
        from flask_migrate import upgrade

        upgrade()
        return "migrations"
    db.create_all()
    return "create_all"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--doctors", type=int, default=None, help="default: patients / 100")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the database and print its path")
    args = parser.parse_args()
    doctors = args.patients // 100 if args.doctors is None else args.doctors

    tmp = tempfile.mkdtemp(prefix="cdp-seed-bench-")
    os.environ["CDP_INSTANCE_PATH"] = str(Path(tmp, "instance"))  # keep ./instance untouched
    from cdp import create_app
    from cdp.actors import SYSTEM
    from cdp.db import db
    from cdp.models import Event, Identity, Profile
    from cdp.seed import demo

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench.db"})
    with app.app_context():
        schema = _build_schema()
        print(f"schema: {schema}; seeding {args.patients} patients, {doctors} doctors")
        started = time.perf_counter()
        result = demo.seed_demo(
            SYSTEM,
            args.patients,
            doctors,
            args.seed,
            progress=lambda done, total, message: print(f"  {message}", file=sys.stderr),
        )
        elapsed = time.perf_counter() - started
        tables = (("profiles", Profile), ("identities", Identity), ("events", Event))
        counts = {
            name: db.session.scalar(sa.select(sa.func.count()).select_from(model))
            for name, model in tables
        }
        db.session.remove()
        db.engine.dispose()
    assert counts["events"] == result["events"]

    seconds = result["seconds"]
    size = sum(f.stat().st_size for f in Path(tmp).glob("bench.db*")) / 2**20
    total_rows = sum(counts.values())
    print(f"elapsed: {elapsed:.1f} s end to end; database {size:.0f} MiB")
    print(f"  generating rows (incl. encryption): {seconds['generate']:.1f} s")
    for name, rows in counts.items():
        insert = seconds[name]
        print(
            f"  {name:>10}: {rows:>9} rows, inserted in {insert:6.1f} s = "
            f"{rows / insert:>8.0f} rows/s insert, {rows / elapsed:>8.0f} rows/s end to end"
        )
    print(f"  committing: {seconds['commit']:.1f} s")
    print(f"  all tables: {total_rows} rows, {total_rows / elapsed:.0f} rows/s end to end")
    if args.keep:
        print(f"kept: {tmp}/bench.db")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
