"""``stroke model-card``: print a registered version's model card (Markdown), its CHAI Applied
Model Card (JSON) or its change-control record (JSON)."""

from __future__ import annotations

import argparse

FORMATS = ("markdown", "chai", "change-control")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", default=None, help="version number or alias (default: the champion)"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="markdown",
        help="markdown: the TRIPOD+AI card; chai: model_card.json (CHAI Applied Model Card); "
        "change-control: change_control.json (why the version exists, what changed, acceptance, "
        "rollback)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.model.version_docs import model_card_text, version_record

    settings = load_settings()
    if args.format == "markdown":
        print(model_card_text(args.version, settings=settings))
    else:
        print(json.dumps(version_record(args.version, args.format, settings=settings), indent=2))
    return 0
