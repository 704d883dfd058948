"""Config dataclasses to plain JSON and back, for every stage's config.

    d = to_dict(TrainConfig(unfreeze_last=2))        # plain dicts, lists, numbers, strings
    cfg = from_dict(TrainConfig, d)                  # == TrainConfig(unfreeze_last=2)
    from_dict(RunConfig, {"screen": {"knn": 5}})     # UserError naming `screen` and valid keys

Nested dataclass fields (a `ScreenConfig`'s `probe`) are written as dicts and rebuilt as
dataclasses, tuples become lists and come back as tuples, so a run's `config.json` re-makes
the run exactly. A leaf module: it imports nothing else of the project but `engine.errors`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import PurePath

from engine.errors import UserError


def to_dict(cfg) -> dict:
    """A dataclass as a dict of JSON-able values (nested dataclasses as dicts)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    return value


def from_dict(cls: type, d, where: str | None = None):
    """Build `cls` from a dict, recursing into nested dataclass fields.

    Args:
        cls: the dataclass to build.
        d: its values; missing keys take the defaults.
        where: the name of this section in messages (default: the class name).

    Raises:
        UserError: `d` is not a dict, holds a key `cls` has no field for (the message lists
            the valid keys), or a value the dataclass refuses.
    """
    where = where or cls.__name__
    if not isinstance(d, dict):
        raise UserError(f"config section {where!r} must be a JSON object, got {d!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise UserError(
            f"unknown key(s) {', '.join(unknown)} in config section {where!r}; "
            f"valid: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    values = {k: _typed(hints.get(k), v, f"{where}.{k}") for k, v in d.items()}
    try:
        return cls(**values)
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise UserError(f"config section {where!r}: {err}") from err


def _typed(hint, value, where: str):
    """`value` read back as `hint` wants: nested dataclasses rebuilt, lists as tuples; a
    value of another type refused in one line (a JSON `true` is not a seed, nor "10" a count).
    """
    given = value
    for option in _options(hint):
        if dataclasses.is_dataclass(option) and value is not None:
            return from_dict(option, value, where)  # refuses anything but a dict
        if tuple in (option, typing.get_origin(option)) and isinstance(value, list):
            value = tuple(value)
            break
    if hint is not None and not any(_fits(option, value) for option in _options(hint)):
        raise UserError(
            f"config key {where} is {given!r} ({type(given).__name__}), expected "
            f"{' or '.join(_type_name(option) for option in _options(hint))}"
        )
    return value


def _fits(option, value) -> bool:
    """Whether a JSON-read `value` is of the annotated type `option` (bool is not a number; an
    int is a float; types this check does not know are accepted)."""
    origin = typing.get_origin(option) or option
    if option is type(None):
        return value is None
    if option is bool:
        return isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if option is str:
        return isinstance(value, str)
    if origin is tuple:
        args = [a for a in typing.get_args(option) if a is not Ellipsis]
        return isinstance(value, tuple) and all(_fits(args[0], v) for v in value if args)
    if origin in (list, dict):
        return isinstance(value, origin)
    if origin is typing.Literal:
        return value in typing.get_args(option)
    return True


def _type_name(option) -> str:
    if option is type(None):
        return "null"
    return str(option) if typing.get_origin(option) else getattr(option, "__name__", str(option))


def _options(hint) -> tuple:
    """The members of `A | B | None` (or `hint` itself)."""
    if hint is None:
        return ()
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)
