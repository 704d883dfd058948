"""The `engine` command line.

    engine shard data/train
    engine features work/shards/train --unfreeze-last 2
    engine train --unfreeze-last 2
    engine predict data/test --model work/runs/latest

Each subcommand lives in `engine/commands/<name>.py` and is imported only when it runs, so
`engine --help` stays instant (torch, DALI and open_clip load in a second or more).
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from engine.errors import user_error_from

# name -> (module under engine.commands, one-line help shown by `engine --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "shard": ("shard", "Pack an image folder into WebDataset shards, repairing broken files."),
    "features": ("features", "Run the frozen CLIP trunk once and cache its tokens in Zarr."),
    "train": ("train", "Train head and last blocks from the cache, with screening rounds."),
    "screen": ("screen", "Run noisy-label screening alone and inspect suspicious samples."),
    "predict": ("predict", "Predict classes for a test folder, shards or feature store."),
    "eval": ("evaluate", "Score a prediction CSV against a label CSV."),
    "bench": ("bench", "Time every stage in images/s next to its plain baseline."),
    "demo": ("demo", "Run the whole flow on generated sample data."),
}


OUR_PACKAGES = ("engine", "shards", "features", "heads", "bench")


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"engine.commands.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so listing commands imports nothing heavy.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            err = user_error_from(exc)  # UserError, or the OS refusing a path the user chose
            if err is None:
                raise
            raise click.ClickException(one_line(str(err))) from exc

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Every failure a user can fix ends in one `Error: ...` line and exit code 1 (click's
        own usage errors included: they would print usage and a hint, exit 2); Ctrl-C ends
        in one line and exit code 130, the shell's code for SIGINT."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as err:
            hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            click.echo(f"Error: {one_line(err.format_message())}{hint}", err=True)
            sys.exit(1)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except (click.Abort, KeyboardInterrupt, EOFError):
            click.echo(
                "\nAborted: interrupted; shard, features and train resume when run again.", err=True
            )
            sys.exit(INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C


def one_line(message: str) -> str:
    """A message on one line: the CLI's promise for every error."""
    return " ".join(message.split())


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="engine")
def main(verbose: bool) -> None:
    """engine: shard, cache, screen and train CLIP ViT-B/32 on noisy web images.

    Typical flow: shard -> train (calls features when the cache is missing) -> predict.
    """
    # Our packages speak at INFO; libraries (open_clip logs every model build on the root
    # logger) only at WARNING unless --verbose.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for package in OUR_PACKAGES:
        logging.getLogger(package).setLevel(logging.DEBUG if verbose else logging.INFO)
