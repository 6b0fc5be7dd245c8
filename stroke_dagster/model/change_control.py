"""A change-control record per model version: why it exists, what changed, how it was accepted.

Clinical governance asks of every version that could score patients: what changed against the
champion it would replace (data windows and their hashes, patients and events, code, hyper-
parameters), why it was made (first training, drift retraining, site recalibration, a manual
``stroke train``), the acceptance criteria *as configured before it was evaluated*, its result on
each, the decision and how to undo it. This module builds that record from plain inputs and
writes it beside the version's other artifacts:

- :func:`record_criteria` logs the gate's criteria and margins (``change_control/
  acceptance_criteria.json``) before the gate runs, so the record proves they were set first;
- :func:`document_change` builds the record after the gate (:func:`build_record`, pure) and logs
  it as ``change_control.json``; the model card (:mod:`stroke_dagster.model.card`) renders it.

The callers (the ``registered_model`` asset, :mod:`stroke_dagster.model.recalibrate`) pass the
"why" (:func:`why_from_tags`, :func:`why_recalibration`) and the data (:func:`training_data`,
:func:`recalibration_data`); nothing here knows Dagster.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stroke_dagster.core.schema import ID, TARGET
from stroke_dagster.core.settings import MODEL_NAME, GateSettings, Settings

log = logging.getLogger(__name__)

ARTIFACT = "change_control.json"
CRITERIA_ARTIFACT = "change_control/acceptance_criteria.json"
SCHEMA = "stroke-dagster/change-control/v1"
REASON_TAG = "change_reason"

# Why a version exists.
FIRST_TRAINING = "first_training"
DRIFT_RETRAINING = "drift_retraining"
RECALIBRATION = "recalibration"
MANUAL_TRAINING = "manual_training"
TRAINING = "training"  # launched in Dagster (UI, schedule, another sensor)

# Dagster run tags set by the drift sensor (defs/retraining.py) and by ``stroke train``.
TRIGGER_TAG = "stroke/trigger"
LAUNCHED_BY_TAG = "stroke/launched_by"

# The gate's criteria by function name: what each judges, which figure decides, its margin.
# (Keyed by name so that gate.py, edited elsewhere, needs no change; an unknown criterion is
# recorded by name, without a margin.)
_CRITERIA: dict[str, Callable[[GateSettings], dict[str, Any]]] = {
    "auc_floor_criterion": lambda g: {
        "name": "auc_floor",
        "statistic": "candidate ROC AUC on the patients neither model trained on",
        "decided_by": "point estimate",
        "passes_when": "ROC AUC > margin",
        "margin": g.auc_floor,
        "estimate": "candidate_auc",
        "bound": "candidate_auc",
        "margin_key": "auc_floor",
    },
    "auc_non_inferiority_criterion": lambda g: {
        "name": "auc_vs_champion",
        "statistic": "candidate - champion ROC AUC on the same patients (DeLong, paired 95% CI)",
        "decided_by": "lower 95% bound",
        "passes_when": "lower bound >= margin; refused when the upper bound < margin",
        "margin": -g.tolerance,
        "estimate": "auc_difference",
        "bound": "auc_difference_ci_low",
        "margin_key": "auc_difference_margin",
    },
    "calibration_criterion": lambda g: {
        "name": "calibration_vs_champion",
        "statistic": "candidate / champion mean log loss (paired, delta-method 95% CI)",
        "decided_by": "upper 95% bound",
        "passes_when": "upper bound <= margin; refused when the lower bound > margin",
        "margin": 1.0 + g.log_loss_margin,
        "estimate": "log_loss_ratio",
        "bound": "log_loss_ratio_ci_high",
        "margin_key": "log_loss_ratio_margin",
    },
    "calibration_in_the_large_criterion": lambda g: {
        "name": "calibration_in_the_large_vs_champion",
        "statistic": "|ln O:E(candidate)| - |ln O:E(champion)| (95% CI from the error of O)",
        "decided_by": "upper 95% bound",
        "passes_when": "upper bound <= margin (ln oe_margin); refused when the lower bound > it",
        "margin": math.log(g.oe_margin),
        "estimate": "oe_excess",
        "bound": "oe_excess_ci_high",
        "margin_key": "oe_excess_margin",
    },
    "calibration_gain_criterion": lambda g: {
        "name": "calibration_gain",
        "statistic": "candidate - champion per-patient log loss and Brier (paired 95% CIs)",
        "decided_by": "upper 95% bounds",
        "passes_when": "either upper bound < margin; refused when both lower bounds >= margin",
        "margin": 0.0,
        "estimate": None,
        "bound": "log_loss_difference_ci_high",
        "margin_key": None,
    },
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become ``None``, numpy scalars plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def code_version(settings: Settings) -> dict[str, Any]:
    """The code that made a version: :func:`stroke_dagster.audit.records.code_version` (the build's
    ``STROKE_CODE_VERSION``, else the package version ``+g<git commit>``), split into parts."""
    from importlib.metadata import PackageNotFoundError, version

    from stroke_dagster.audit.records import code_version as audit_code_version

    text = audit_code_version(settings)
    try:
        package = version("stroke-dagster")
    except PackageNotFoundError:
        package = None
    commit = text.split("+g", 1)[1] if "+g" in text else None
    return {
        "code_version": text,
        "package": "stroke-dagster",
        "package_version": package,
        "git_commit": commit,
    }


# --------------------------------------------------------------------------------------------
# The data a version learnt from
# --------------------------------------------------------------------------------------------


def frame_sha256(frame: pd.DataFrame) -> str:
    """sha256 of a frame's content, independent of row and column order (rows by ``id``)."""
    ordered = frame[sorted(map(str, frame.columns))]
    if ID in ordered.columns:
        ordered = ordered.assign(_key=ordered[ID].astype(str)).sort_values("_key", kind="stable")
        ordered = ordered.drop(columns="_key")
    return hashlib.sha256(ordered.to_csv(index=False).encode()).hexdigest()


def _file_sha256(open_file: Callable[[], Any]) -> str | None:
    digest = hashlib.sha256()
    try:
        with open_file() as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def cohort_days(frame: pd.DataFrame) -> list[str]:
    """The labelled cohort days of a frame's rows (their ids are ``<day>/<id>``)."""
    if not len(frame) or ID not in frame.columns:
        return []
    ids = frame[ID].astype(str)
    return sorted(ids[ids.str.contains("/", regex=False)].str.split("/", n=1).str[0].unique())


def _part(frame: pd.DataFrame) -> dict[str, Any]:
    from stroke_dagster.core.features import patient_keys

    return {
        "rows": len(frame),
        "patients": int(patient_keys(frame).nunique()) if len(frame) else 0,
        "events": int(pd.to_numeric(frame[TARGET]).sum()) if len(frame) else 0,
        "days": cohort_days(frame),
        "sha256": frame_sha256(frame),
    }


def day_files(days: Iterable[str], settings: Settings) -> list[dict[str, Any]]:
    """Each labelled day's cohort and labels files with their sha256 (as stored now)."""
    files = settings.files
    out = []
    for day in sorted(set(days)):
        cohort = settings.incoming_file(day)
        labels = settings.labels_dir / f"{day}.csv"
        for role, path in (("cohort", cohort), ("labels", labels)):
            if path is None or not files.is_file(path):
                continue
            digest = _file_sha256(functools.partial(files.open, path, "rb"))
            out.append({"day": day, "role": role, "path": str(path), "sha256": digest})
    return out


def training_data(train: pd.DataFrame, holdout: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    """What a newly trained forest learnt from and was held out on: rows, patients, events,
    labelled days and content hashes, and the source files with theirs."""
    raw = Path(settings.raw_csv)
    source: dict[str, Any]
    if raw.is_file():
        source = {"path": str(raw), "sha256": _file_sha256(lambda: raw.open("rb"))}
    else:
        source = {"path": str(raw), "sha256": None, "synthetic": True}
    days = sorted(set(cohort_days(train)) | set(cohort_days(holdout)))
    return {
        "training": _part(train),
        "holdout": _part(holdout),
        "source": source,
        "files": day_files(days, settings),
    }


def recalibration_data(
    site: pd.DataFrame, fit: Any, days: Sequence[str], settings: Settings
) -> dict[str, Any]:
    """The site patients a recalibration ``fit`` was fit on (``site`` has ``day`` and the
    cohort's ``id``; ``fit.fit_ids`` are ``<day>/<id>``), those it was judged on, its labelled
    days and their files."""
    part = site
    if len(site):
        keys = site["day"].astype(str) + "/" + site[ID].astype(str)
        part = site.assign(**{ID: keys}).loc[keys.isin(set(map(str, fit.fit_ids))).to_numpy()]
    return {
        "recalibration_fit": _part(part) if len(part) else {"rows": 0},
        "recalibration_judge": {"rows": fit.n_judge, "events": fit.n_judge_events},
        "site_days": sorted(map(str, days)),
        "files": day_files(days, settings),
    }


# --------------------------------------------------------------------------------------------
# Why the version exists
# --------------------------------------------------------------------------------------------


def why_from_tags(
    tags: Mapping[str, str],
    *,
    run_id: str | None,
    previous_champion: str | None,
    site_days: Sequence[str] | None = None,
    forest_version: str | None = None,
) -> dict[str, Any]:
    """Why a training run made a version, from its Dagster run tags: a drift retraining (the
    sensor's tags name the drifted days), the first training (no champion), ``stroke train``, or
    another Dagster launch. ``site_days``: the new forest was also recalibrated on them."""
    launched_by = tags.get(LAUNCHED_BY_TAG)
    for key, what in (("dagster/sensor_name", "sensor"), ("dagster/schedule_name", "schedule")):
        if not launched_by and tags.get(key):
            launched_by = f"Dagster {what} {tags[key]}"
    launched_by = launched_by or "Dagster run"
    why: dict[str, Any] = {"launched_by": launched_by, "dagster_run_id": run_id}
    if tags.get(TRIGGER_TAG) == "drift":
        drifted = [d for d in tags.get("stroke/drifted_days", "").split(",") if d]
        why.update(
            kind=DRIFT_RETRAINING,
            summary=f"drift retraining: {len(drifted)} checked day(s) drifted against "
            f"champion v{tags.get('stroke/champion', '?')} ({', '.join(drifted) or 'n/a'})",
            drifted_days=drifted,
            drift_window=tags.get("stroke/retrain_window"),
            latest_day=tags.get("stroke/latest_day"),
            champion_at_trigger=tags.get("stroke/champion"),
            policy=tags.get("stroke/retrain_reason"),
        )
    elif previous_champion is None:
        why.update(kind=FIRST_TRAINING, summary=f"first training ({launched_by}): no champion yet")
    elif launched_by == "stroke train":
        why.update(kind=MANUAL_TRAINING, summary="manual training (`stroke train`)")
    else:
        why.update(kind=TRAINING, summary=f"training launched by {launched_by}")
    if site_days:
        why["recalibrated_on_site_days"] = sorted(site_days)
        why["forest_version"] = forest_version
        why["summary"] += f"; the new forest recalibrated on {len(site_days)} site day(s)"
    return why


def why_recalibration(
    site_days: Sequence[str], *, recalibrated_from: str, launched_by: str
) -> dict[str, Any]:
    """Why a site recalibration of the champion exists: its labelled site days."""
    days = sorted(site_days)
    return {
        "kind": RECALIBRATION,
        "summary": f"site recalibration of v{recalibrated_from} on {len(days)} labelled day(s) "
        f"({days[0]}..{days[-1]})"
        if days
        else f"site recalibration of v{recalibrated_from}",
        "site_days": days,
        "recalibrated_from": recalibrated_from,
        "launched_by": launched_by,
    }


# --------------------------------------------------------------------------------------------
# Acceptance criteria (before) and results (after)
# --------------------------------------------------------------------------------------------


def acceptance_criteria(criteria: Iterable[Callable[..., Any]], gate: GateSettings) -> dict:
    """The criteria a version will be judged by, with their margins from ``gate``."""
    specs = []
    for fn in criteria:
        name = getattr(fn, "__name__", str(fn))
        make = _CRITERIA.get(name)
        spec = make(gate) if make else {"name": name, "margin": None, "bound": None}
        specs.append({"function": name, **spec})
    return {
        "recorded_at": _now(),
        "settings": gate.model_dump(),
        "min_events": gate.min_events,
        "min_events_rule": f"a comparison with the champion is inconclusive with fewer than "
        f"{gate.min_events} shared events or non-events",
        "criteria": specs,
    }


def record_criteria(
    version: str, criteria: Iterable[Callable[..., Any]], settings: Settings
) -> dict[str, Any]:
    """Log the acceptance criteria of ``version`` before it is judged; returns them."""
    from stroke_dagster.model import registry

    recorded = acceptance_criteria(criteria, settings.gate)
    registry.log_version_json(str(version), CRITERIA_ARTIFACT, _clean(recorded), settings=settings)
    return recorded


def results(verdict: Any, criteria: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each criterion's result: outcome, estimate, deciding bound and margin (as applied and as
    recorded beforehand), and the gate's reason."""
    specs = {s["name"]: s for s in criteria.get("criteria", [])}
    out = []
    for c in verdict.criteria:
        spec = specs.get(c.name, {})
        figures = dict(c.metrics)
        recorded = spec.get("margin")
        applied = figures.get(spec.get("margin_key") or "", recorded)
        out.append(
            {
                "criterion": c.name,
                "outcome": c.outcome,
                "estimate": figures.get(spec.get("estimate") or ""),
                "bound": figures.get(spec.get("bound") or ""),
                "bound_name": spec.get("bound"),
                "margin": applied,
                "margin_as_recorded": recorded,
                "margin_as_recorded_before": recorded is None
                or applied is None
                or math.isclose(float(applied), float(recorded), abs_tol=1e-12),
                "reason": c.reason,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Previous champion, decision, rollback
# --------------------------------------------------------------------------------------------


def hyperparameters(params: Mapping[str, str]) -> dict[str, Any]:
    """The forest's tuned parameters, the tuning set-up and any recalibration, from run params."""
    tuning_keys = ("seed", "n_trials", "cv_folds", "n_estimators_range", "brier_ceiling")
    return {
        "forest": {
            k.removeprefix("best_"): v
            for k, v in sorted(params.items())
            if k.startswith("best_") and k != "best_n_jobs"
        },
        "tuning": {k: params[k] for k in tuning_keys if k in params},
        "recalibration": {
            k.removeprefix("recalibration_"): v
            for k, v in sorted(params.items())
            if k.startswith("recalibration_")
        },
    }


def _diff(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    keys = sorted(set(new) | set(old))
    return {
        k: {"previous": old.get(k), "new": new.get(k)}
        for k in keys
        if str(new.get(k)) != str(old.get(k))
    }


def _count(new: Any, old: Any) -> dict[str, Any]:
    change = new - old if isinstance(new, int) and isinstance(old, int) else None
    return {"previous": old, "new": new, "change": change}


def compare(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """What changed against the previous champion's facts (``None``: there was none)."""
    if previous is None:
        return {"previous_champion": None, "note": "no previous champion: everything is new"}
    new_t = (current.get("data") or {}).get("training") or {}
    old_t = (previous.get("data") or {}).get("training") or {}
    new_days, old_days = set(new_t.get("days") or []), set(old_t.get("days") or [])
    same = None
    if new_t.get("sha256") and old_t.get("sha256"):
        same = new_t["sha256"] == old_t["sha256"]
    hyper_new, hyper_old = current.get("hyperparameters") or {}, previous.get("hyperparameters")
    hyper_old = hyper_old or {}
    return {
        "previous_champion": previous.get("version"),
        "training_data_identical": same,
        "training_days_added": sorted(new_days - old_days),
        "training_days_removed": sorted(old_days - new_days),
        "training_rows": _count(new_t.get("rows"), old_t.get("rows")),
        "training_patients": _count(new_t.get("patients"), old_t.get("patients")),
        "training_events": _count(new_t.get("events"), old_t.get("events")),
        "hyperparameters": {
            part: _diff(hyper_new.get(part) or {}, hyper_old.get(part) or {})
            for part in ("forest", "tuning", "recalibration")
        },
        "code": _diff(current.get("code") or {}, previous.get("code") or {}),
    }


def rollback(version: str, verdict: Any | None) -> dict[str, Any]:
    """How to undo the decision: the command that points ``champion`` back at the previous one.

    The command is ``stroke rollback`` (docs/runbook.md, "Roll back a champion"); MLflow's UI
    can move the alias too, without the record.
    """
    if verdict is None:
        return {"needed": False, "to_version": None, "command": None, "note": "not gated"}
    previous = verdict.champion_version
    if not verdict.promoted:
        note = f"not promoted: champion v{previous} unchanged" if previous else "not promoted"
        return {"needed": False, "to_version": None, "command": None, "note": note}
    if previous is None:
        return {
            "needed": False,
            "to_version": None,
            "command": None,
            "note": "first champion: there is no earlier version to roll back to",
        }
    command = f'stroke rollback --to {previous} --reason "<why v{version} is withdrawn>"'
    return {
        "needed": True,
        "to_version": previous,
        "command": command,
        "mlflow_ui": f"Models > {MODEL_NAME} > version {previous} > Aliases: add `champion`",
        "note": "within 30 s champion_rescoring rescores the recent days with the restored "
        "version; the API reloads within STROKE_API_RELOAD_SECONDS (or POST /admin/reload)",
    }


def decision(verdict: Any | None, note: str | None = None) -> dict[str, Any]:
    """The gate's decision as recorded (``verdict`` None: the version was not gated)."""
    if verdict is None:
        return {"outcome": "not gated", "alias": None, "reason": note, "decided_at": _now()}
    return {
        "outcome": verdict.outcome,
        "alias": verdict.alias,
        "reason": verdict.reason,
        "compared_with": verdict.champion_version,
        "n_unseen": verdict.n_unseen,
        "n_unseen_events": verdict.n_unseen_events,
        "rule": verdict.rule,
        "decided_at": _now(),
    }


def build_record(
    *,
    version: str,
    why: Mapping[str, Any],
    data: Mapping[str, Any],
    hyper: Mapping[str, Any],
    code: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    criteria: Mapping[str, Any] | None,
    verdict: Any | None,
    note: str | None = None,
) -> dict[str, Any]:
    """The change-control record of one version (plain JSON-able values)."""
    facts = {"data": data, "hyperparameters": hyper, "code": code}
    criteria = criteria or {}
    return _clean(
        {
            "schema": SCHEMA,
            "model_name": MODEL_NAME,
            "version": str(version),
            "created_at": _now(),
            "why": dict(why),
            "what_changed": {**facts, "against_previous_champion": compare(facts, previous)},
            "acceptance": {
                "recorded_before_evaluation": bool(criteria),
                "criteria": criteria,
                "results": results(verdict, criteria) if verdict is not None else [],
            },
            "decision": decision(verdict, note),
            "rollback": rollback(str(version), verdict),
        }
    )


# --------------------------------------------------------------------------------------------
# MLflow: read a version's facts, write its record
# --------------------------------------------------------------------------------------------


def read_record(version: str, settings: Settings) -> dict[str, Any] | None:
    """``change_control.json`` of ``version``, or ``None`` (a version made before records)."""
    from stroke_dagster.model import registry

    return registry.read_version_json(str(version), ARTIFACT, settings=settings)


def version_facts(version: str, settings: Settings) -> dict[str, Any]:
    """Data, hyper-parameters and code of ``version``: from its record, else (an older
    version) from its run's params and stored split."""
    from stroke_dagster.model import registry

    record = read_record(version, settings)
    if record is not None:
        facts = record.get("what_changed") or {}
        keys = ("data", "hyperparameters", "code")
        return {"version": str(version), **{k: facts.get(k) for k in keys}}
    client = registry.client(settings)
    run = client.get_run(registry.version_run_id(str(version), settings=settings))
    params = run.data.params
    training: dict[str, Any] = {"rows": int(params["train_rows"])} if "train_rows" in params else {}
    split = registry.read_version_frame(
        str(version), registry.SPLIT_IDS_ARTIFACT, settings=settings
    )
    if split is not None:
        training["days"] = cohort_days(split.loc[split["split"] == "train"])
    return {
        "version": str(version),
        "data": {"training": training, "source": {"path": params.get("data_source")}},
        "hyperparameters": hyperparameters(params),
        "code": None,
    }


def document_change(
    version: str,
    verdict: Any | None,
    *,
    why: Mapping[str, Any],
    data: Mapping[str, Any],
    settings: Settings,
    note: str | None = None,
) -> dict[str, Any]:
    """Build ``version``'s record after its gate (``verdict``; None: not gated, with ``note``)
    and log it as ``change_control.json``; returns it.

    A version without its own training data (a recalibration) inherits its base's."""
    from stroke_dagster.model import registry

    version = str(version)
    client = registry.client(settings)
    params = client.get_run(registry.version_run_id(version, settings=settings)).data.params
    data = dict(data)
    base = params.get("recalibrated_from")
    if "training" not in data and base:
        inherited = (version_facts(base, settings).get("data") or {}).get("training") or {}
        data["training"] = {**inherited, "inherited_from": base}
    previous = None
    if verdict is not None and verdict.champion_version is not None:
        previous = version_facts(verdict.champion_version, settings)
    criteria = registry.read_version_json(version, CRITERIA_ARTIFACT, settings=settings)
    record = build_record(
        version=version,
        why=why,
        data=data,
        hyper=hyperparameters(params),
        code=code_version(settings),
        previous=previous,
        criteria=criteria,
        verdict=verdict,
        note=note,
    )
    registry.log_version_json(version, ARTIFACT, record, settings=settings)
    try:
        client.set_model_version_tag(MODEL_NAME, version, REASON_TAG, str(why.get("kind")))
    except Exception as exc:  # a tag is a courtesy; the artifact is the record
        log.debug("no change-reason tag on v%s: %s", version, exc)
    return record
