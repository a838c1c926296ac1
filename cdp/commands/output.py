"""Shared CLI output: one JSON object with --json, readable lines otherwise; errors as usage errors."""

from __future__ import annotations

import functools

import click
import orjson

from cdp.exceptions import CdpError


def emit(as_json: bool, payload: dict, lines: list[str]) -> None:
    if as_json:
        click.echo(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode())
    else:
        for line in lines:
            click.echo(line)


def domain_errors(fn):
    """Turn domain errors into a clean CLI error (exit 2) naming the bad field."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CdpError as exc:
            where = f" ({exc.field})" if exc.field else ""
            raise click.UsageError(f"{exc.message}{where}") from exc

    return run
