"""``stroke model-card``: print a registered version's model card (Markdown)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", default=None, help="version number or alias (default: the champion)"
    )


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.settings import load_settings
    from stroke_dagster.version_docs import model_card_text

    print(model_card_text(args.version, settings=load_settings()))
    return 0
