"""``stroke rollback``: point the champion alias back at an earlier version, with the reason."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, help="the version number to make champion again")
    parser.add_argument(
        "--reason", required=True, help="why (recorded on both versions in the registry)"
    )


def run(args: argparse.Namespace) -> int:
    from stroke_dagster.core.errors import InputError
    from stroke_dagster.core.settings import MODEL_NAME, load_settings
    from stroke_dagster.model import registry

    target, reason = str(args.to).strip().lstrip("v"), args.reason.strip()
    if not target.isdigit():
        raise InputError(f"--to must be a version number, got {args.to!r}")
    if not reason:
        raise InputError("--reason must say why the champion is rolled back")
    settings = load_settings()
    registry.load_model(target, settings=settings)  # an InputError when it does not exist
    current = registry.resolve_alias(registry.CHAMPION, settings=settings)
    if current == target:
        raise InputError(f"v{target} is already the champion")
    note = f"rollback of v{current}: {reason}" if current else f"rollback: {reason}"
    registry.set_alias(
        target, registry.CHAMPION, note, settings=settings, expected_champion=current
    )
    if current is not None:
        registry.client(settings).set_model_version_tag(
            MODEL_NAME, current, "rolled_back", f"to v{target}: {reason}"[:5000]
        )
    print(json.dumps({"champion": target, "previous": current, "reason": reason}))
    return 0
