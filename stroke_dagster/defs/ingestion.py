"""Ingestion assets: the raw labelled file, its validated rows, and the train/holdout split."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from stroke_dagster.core.features import split_train_holdout
from stroke_dagster.defs.metadata import (
    COLUMN_SCHEMA,
    ROW_COUNT,
    glance,
    patient_schema,
    pct,
    readable,
)
from stroke_dagster.defs.resources import StrokeSettings
from stroke_dagster.defs.sources import cohort_labels
from stroke_dagster.io.validation import validate_patients
from stroke_dagster.model.training_data import (
    combine_labelled,
    load_raw_training_data,
    missing_raw_file,
)

OWNERS = ["team:ml-platform"]
GROUP = "ingestion"


class SplitConfig(dg.Config):
    """Share of patients held out, chosen per patient by a hash of the id (no seed)."""

    holdout_fraction: float = 0.2


@dg.asset(
    group_name=GROUP,
    kinds={"python", "pandas", "csv"},
    owners=OWNERS,
    metadata={COLUMN_SCHEMA: patient_schema(labelled=True)},
    description=(
        "The labelled Kaggle stroke file at STROKE_RAW_CSV, read as text (BOM, CRLF and N/A "
        "tolerated). When the file is absent: the project's synthetic patients if "
        "STROKE_ALLOW_SYNTHETIC (the version is tagged training_data=synthetic), else the run "
        "fails with one line."
    ),
)
def raw_patients(context: dg.AssetExecutionContext, stroke: StrokeSettings) -> dg.Output:
    settings = stroke.settings()
    if (refusal := missing_raw_file(settings)) is not None:  # no retry brings the file
        raise dg.Failure(description=refusal, allow_retries=False)
    data = load_raw_training_data(settings, synthetic_rows=stroke.synthetic_rows)
    if data.synthetic:
        context.log.warning(
            f"SYNTHETIC DATA: no file at {stroke.settings().raw_csv}; using {data.source}. "
            "Set STROKE_RAW_CSV to the Kaggle file to train on real patients."
        )
    return glance(
        dg.Output(
            data.frame,
            metadata={
                ROW_COUNT: len(data.frame),
                "source": data.source,
                "synthetic": data.synthetic,
                "rows": len(data.frame),
                "columns": dg.MetadataValue.json(list(map(str, data.frame.columns))),
                "preview": dg.MetadataValue.md(data.frame.head(5).to_markdown(index=False)),
            },
        )
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "pandas"},
    owners=OWNERS,
    deps=[cohort_labels],
    metadata={COLUMN_SCHEMA: patient_schema(labelled=True)},
    description=(
        "Every labelled cohort received so far (STROKE_HOME/incoming/D.* joined with "
        "STROKE_HOME/labels/D.csv), so that a retrain learns from the new population too."
    ),
)
def labelled_cohorts(stroke: StrokeSettings) -> dg.Output:
    from stroke_dagster.io.labels import labelled_cohorts as read_labelled_cohorts

    frame = read_labelled_cohorts(stroke.settings())
    # Ids are "<day>/<id>": the day a labelled row came from.
    days = sorted(frame["id"].astype(str).str.split("/").str[0].unique()) if len(frame) else []
    return glance(
        dg.Output(
            frame,
            metadata={
                ROW_COUNT: len(frame),
                "rows": len(frame),
                "days": len(days),
                "latest_day": days[-1] if days else "",
            },
        )
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "pandas", "duckdb"},
    owners=OWNERS,
    metadata={COLUMN_SCHEMA: patient_schema(labelled=True)},
    check_specs=[
        dg.AssetCheckSpec(
            "quarantine_share_within_limit",
            asset="clean_patients",
            blocking=True,
            description="Fails, and so blocks training, when too many rows were quarantined.",
        )
    ],
    description=(
        "Typed, validated labelled patients (raw file + labelled cohorts). Rows that break the "
        "patient schema go to the DuckDB `quarantine` table with their reason."
    ),
)
def clean_patients(
    context: dg.AssetExecutionContext,
    stroke: StrokeSettings,
    raw_patients: pd.DataFrame,
    labelled_cohorts: pd.DataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    from stroke_dagster.warehouse import store as warehouse

    settings = stroke.settings()
    sources = [("training", raw_patients)]
    if len(labelled_cohorts):
        sources.append(("labelled_cohorts", labelled_cohorts))
    valid_frames, rows_in, quarantined, reasons = [], 0, 0, pd.Series(dtype="int64")
    for name, frame in sources:
        result = validate_patients(frame, require_label=True)
        rows_in += result.rows_in
        quarantined += len(result.quarantine)
        if len(result.quarantine):
            warehouse.write_quarantine(
                result.quarantine, source=name, cohort_date=None, settings=settings
            )
            reasons = reasons.add(result.quarantine["reason"].value_counts(), fill_value=0)
        valid_frames.append(result.valid)
    clean = combine_labelled(valid_frames)
    share = quarantined / rows_in if rows_in else 0.0
    context.log.info(f"{len(clean)} valid rows, {quarantined} quarantined ({share:.2%})")
    yield glance(
        dg.Output(
            clean,
            metadata={
                ROW_COUNT: len(clean),
                "rows_in": rows_in,
                "rows_valid": len(clean),
                "rows_quarantined": quarantined,
                "quarantined_pct": pct(share),
                "max_quarantine_share": stroke.max_quarantine_share,
                "stroke_prevalence": float(clean["stroke"].mean()) if len(clean) else 0.0,
                "quarantine_reasons": dg.MetadataValue.json(
                    {str(k): int(v) for k, v in reasons.items()}
                ),
                "quarantine_table": str(settings.files.path("warehouse", "quarantine")),
            },
        )
    )
    limit = stroke.max_quarantine_share
    yield dg.AssetCheckResult(
        check_name="quarantine_share_within_limit",
        passed=share <= limit,
        metadata=readable({"quarantined_pct": pct(share), "limit_pct": pct(limit)}),
        description=f"{share:.2%} of rows quarantined (limit {limit:.2%})",
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "pandas"},
    owners=OWNERS,
    description=(
        "Train/holdout split of the clean patients, fixed per patient by a hash of the id "
        "(blake2b(id) mod 1000 < 200): stable across seeds and as data grows, so the gate can "
        "compare versions on patients neither trained on."
    ),
)
def patient_split(
    clean_patients: pd.DataFrame, config: SplitConfig
) -> dg.Output[dict[str, pd.DataFrame]]:
    from stroke_dagster.core.errors import InputError

    try:
        train, holdout = split_train_holdout(clean_patients, config.holdout_fraction)
    except (InputError, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from None
    return glance(
        dg.Output(
            {"train": train, "holdout": holdout},
            metadata={
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "train_strokes": int(train["stroke"].sum()),
                "holdout_strokes": int(holdout["stroke"].sum()),
                "holdout_fraction": config.holdout_fraction,
            },
        )
    )
