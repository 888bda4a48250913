#!/usr/bin/env python
"""Fine-tune a timm image classifier on paintings with Accelerate.

    accelerate launch trainers/train.py --config trainers/configs/styles10_offline.yaml --output-dir runs/styles10
    python trainers/train.py --config trainers/configs/styles10_offline.yaml --output-dir runs/s --epochs 2

Every key of the ``--config`` YAML is a flag of this script (``output_dir:`` == ``--output-dir``);
flags given on the command line override the file. The resolved config is written to
``<output-dir>/train_config.yaml``. The output folder ends up as a model folder (config.json,
model.safetensors, README.md card, test metrics and confusion matrix, all_results.json) that
loads with ``artlens.models.load_model``, timm (``local-dir:``) and transformers.

This file is the entry point (exit codes); the flags (``artlens.training.parse_args``) and the run itself
(``artlens.training.train``: optimizer, scheduler, data and epoch-loop pieces beside it) are in the package.
Other scripts run a training in-process with ``training.train(training.parse_args(argv))``, which returns
the results dict.
"""
from __future__ import annotations

import argparse
import json
import sys

from artlens.config import ConfigError, parse_with_config, save_config, valid_keys  # noqa: F401
from artlens.data import DataError
from artlens.models import ModelError
from artlens.training import (  # noqa: F401
    LIST_KEYS,
    build_parser,
    optional_int,
    optional_str,
    parse_args,
    str2bool,
    threshold_arg,
    train,
)

USER_ERRORS = (ConfigError, DataError, ModelError, FileNotFoundError)


def main(args: argparse.Namespace) -> dict:
    """One run on the parsed flags; returns the results dict (``artlens.training.train``)."""
    return train(args)


def cli(argv=None) -> int:
    try:
        results = main(parse_args(argv))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps({k: v for k, v in results.items() if k != "label_names"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
