"""Options shared by several commands, declared once so they read the same everywhere.

The valid names of heads, losses and screening extras come from their registries
(`heads.head.HEADS`, `heads.losses.LOSSES`, `heads.screen.extras.EXTRAS`), looked up only
when a help text is shown or a value is checked: the registries live beside torch, and
importing it would make every `--help` take seconds instead of a few hundredths.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import click

# Images per decode/forward batch: 8192 fills an H200 with room to spare; larger ones only
# fail deep inside DALI (std::bad_alloc) after minutes of set-up, so they are refused first.
MAX_BATCH_SIZE = 8192
BATCH_SIZE_RANGE = click.IntRange(1, MAX_BATCH_SIZE)


def head_names() -> list[str]:
    from heads.head import list_heads

    return list_heads()


def loss_names() -> list[str]:
    from heads.losses import list_losses

    return list_losses()


def extra_names() -> list[str]:
    from heads.screen.extras import available

    return list(available())


class NamesOption(click.Option):
    """An option whose help ends with the valid names of a registry, listed only when the help
    is shown (listing imports the registry's module)."""

    # Wrap width of the names: click's option-help column at its 80-column default.
    NAMES_WIDTH = 44

    def __init__(self, *args, names: Callable[[], list[str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.names = names

    def get_help_record(self, ctx: click.Context):
        template = self.help
        self.help = f"{template or ''}\n\n{names_paragraph(self.names(), self.NAMES_WIDTH)}"
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = template


def names_paragraph(names: list[str], width: int) -> str:
    """The names as a paragraph click prints as it is (`\\b`): click's own wrapping breaks
    lines at hyphens, which split `srrs-mixup` in two; here lines break between names only."""
    lines = textwrap.wrap(", ".join(names) + ".", width, break_on_hyphens=False,
                          break_long_words=False)  # fmt: skip
    return "\b\nChoices: " + "\n".join(lines)


def screen_extra_option(func):
    """`--screen-extra NAME` (repeatable), checked against the registered screening extras."""
    return click.option(
        "--screen-extra",
        "screen_extra",
        multiple=True,
        callback=check_screen_extras,
        cls=NamesOption,
        names=extra_names,
        help="Screening extra to switch on (repeatable).",
    )(func)


def folder_mixture_option(func):
    """`--folder-mixture/--no-folder-mixture`: the relabeling stage after screening's rounds."""
    return click.option(
        "--folder-mixture/--no-folder-mixture",
        "folder_mixture",
        default=None,
        help="After screening, name each sample's true class: every folder is fitted as a "
        "mixture of true classes and the final model learns those (bench/NOISY.md). "
        "[default: on]",
    )(func)


def check_screen_extras(ctx, param, values):
    """Refuse a name no screening extra is registered under."""
    if not values:
        return values
    from heads.screen import extras

    gone = getattr(extras, "MOVED_TO_CORE", {})
    moved = [v for v in values if v in gone]
    if moved:
        raise click.BadParameter(f"{moved[0]} is no extra any more: {gone[moved[0]]}")
    valid = extra_names()
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise click.BadParameter(
            f"unknown extra(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    return values


def deterministic_option(func):
    """`--deterministic/--no-deterministic`: deterministic kernels on the GPU (`heads.numerics`)."""
    return click.option(
        "--deterministic/--no-deterministic",
        default=None,
        help="Deterministic GPU kernels, so a seeded run re-makes the same model (costs little; "
        "see README 'Reproducibility'). [default: on]",
    )(func)
