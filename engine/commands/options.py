"""Options shared by several commands, declared once so they read the same everywhere."""

from __future__ import annotations

import click

# Images per decode/forward batch: 8192 fills an H200 with room to spare; larger ones only
# fail deep inside DALI (std::bad_alloc) after minutes of set-up, so they are refused first.
MAX_BATCH_SIZE = 8192
BATCH_SIZE_RANGE = click.IntRange(1, MAX_BATCH_SIZE)


def screen_extra_option(func):
    """`--screen-extra NAME` (repeatable), checked against the registered screening extras."""
    return click.option(
        "--screen-extra",
        "screen_extra",
        multiple=True,
        callback=check_screen_extras,
        help="Screening extra to switch on (repeatable); see heads.screen.extras.",
    )(func)


def check_screen_extras(ctx, param, values):
    """Refuse a name no screening extra is registered under (when extras exist at all)."""
    try:
        from heads.screen.extras import available
    except ImportError:
        return values
    valid = list(available())
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise click.BadParameter(
            f"unknown extra(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    return values
