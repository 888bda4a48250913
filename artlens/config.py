"""``--config`` YAML files whose keys are a script's flags, for every entry point.

``output_dir: runs/x`` in the file is ``--output-dir runs/x`` on the command line; flags given on
the command line override the file; a key that is not a flag is an error that lists the valid ones.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .errors import ArtlensError
from .files import write_text

__all__ = ["ConfigError", "valid_keys", "config_defaults", "parse_with_config", "save_config"]


class ConfigError(ArtlensError, ValueError):
    """A config file or flag is wrong; the message names the key and the fix."""


def valid_keys(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(a.dest for a in parser._actions if a.dest not in ("help", "config"))


def config_defaults(parser: argparse.ArgumentParser, path: str | os.PathLike) -> dict:
    """Read a YAML config and check every key and value against the parser's flags."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} must be a mapping of option: value")
    actions = {a.dest: a for a in parser._actions}
    keys = valid_keys(parser)
    out = {}
    for key, value in cfg.items():
        k = str(key).replace("-", "_")
        if k == "config":  # a saved resolved config names the file it came from
            continue
        if k not in keys:
            raise ConfigError(f"unknown key '{key}' in {path}; valid keys are: {', '.join(keys)}")
        act = actions[k]
        if value is not None and act.type is not None and not isinstance(value, (list, bool)):
            try:
                value = act.type(value) if isinstance(value, str) or act.type in (int, float) else value
            except (ValueError, argparse.ArgumentTypeError) as e:
                raise ConfigError(f"{path}: bad value for '{key}': {e}") from None
        if act.choices and value is not None and not isinstance(value, list) and value not in act.choices:
            raise ConfigError(f"{path}: '{key}: {value}' is not one of {list(act.choices)}")
        out[k] = value
    return out


def parse_with_config(parser: argparse.ArgumentParser, argv=None, exit_on_error: bool = True) -> argparse.Namespace:
    """Parse ``argv`` with the values of ``--config FILE`` (if given) as defaults.

    A bad config exits through ``parser.error`` (one line, exit code 2), or raises
    :class:`ConfigError` with ``exit_on_error=False`` (for in-process callers).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            parser.set_defaults(**config_defaults(parser, known.config))
        except ConfigError as e:
            if not exit_on_error:
                raise
            parser.error(str(e))
    return parser.parse_args(argv)


def save_config(args, path: str | os.PathLike) -> Path:
    """Write the resolved config (a Namespace or dict) as YAML, via a temporary file."""
    import yaml

    data = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return write_text(path, yaml.safe_dump({k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()},
                                           sort_keys=False))
