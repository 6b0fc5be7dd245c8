"""Synthetic patients in the raw schema, drawn from summary parameters fitted to a real cohort.

The generator is a chain of conditional distributions, each fitted on the real data and stored as
summary parameters in ``params.json`` (probabilities, histogram weights, quantiles and
logistic coefficients; never rows):

1. ``age`` from a one-year histogram (infant ages on the real file's fractional grid).
2. ``gender``, ``work_type``, ``Residence_type`` from tables conditional on the age band;
   ``ever_married`` and ``smoking_status`` conditional on the age band and on whether the
   work type is ``children`` (so children are never married and mostly of unknown smoking status).
3. ``avg_glucose_level`` and ``bmi`` from per-age-band quantile functions (which keep glucose's
   second, diabetic mode) joined by a Gaussian copula.
4. ``hypertension``, then ``heart_disease``, then the ``stroke`` label from logistic models on
   everything drawn before (age enters through hinge terms, so risk rises non-linearly).
5. ``bmi`` goes missing with a logistic probability that is higher for strokes, as in the source.

Everything is vectorised numpy: a million rows take one to two seconds on one core. A seed fixes
every draw, and the label is always drawn (then dropped when ``with_label=False``), so a cohort
equals the labelled sample of the same seed without its ``stroke`` column.

Rebuild the parameters from a real file (e.g. the Kaggle stroke CSV)::

    python -m stroke_dagster.simulate.generator --fit PATH_TO_REAL_CSV [--params-out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit, ndtr

from stroke_dagster.core.schema import (
    CATEGORICAL_FIELDS,
    FEATURES,
    FIELDS_BY_NAME,
    ID,
    RAW_COLUMNS,
    TARGET,
)

PARAMS_PATH = Path(__file__).with_name("params.json")
FORMAT_VERSION = 1

# Age bands for the categorical tables (fine where work, marriage and smoking change quickly).
CATEGORY_BANDS: tuple[float, ...] = (0, 2, 6, 10, 13, 16, 18, 20, 25, 30, 40, 50, 60, 70, 75, 121)
# Coarser bands for the numeric quantile functions (each needs a few hundred rows).
NUMERIC_BANDS: tuple[float, ...] = (0, 2, 6, 10, 14, 18, 22, 30, 40, 50, 60, 70, 121)
QUANTILE_LEVELS: tuple[float, ...] = (
    0.0, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
    0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0,
)  # fmt: skip
AGE_KNOTS: tuple[float, ...] = (20.0, 40.0, 60.0, 75.0)
# Pseudo-counts pulling a sparse table cell towards its parent distribution.
SHRINK_GENDER = 50.0
SHRINK_CHILD_CELL = 5.0
CHILD_WORK = "children"
# What each categorical column is conditioned on ("child": the work type drawn is children).
CONDITIONING: dict[str, tuple[str, ...]] = {
    "gender": ("age_band",),
    "work_type": ("age_band",),
    "Residence_type": (),
    "ever_married": ("age_band", "child"),
    "smoking_status": ("age_band", "child"),
}
_CAT_ORDER = ("gender", "work_type", "Residence_type", "ever_married", "smoking_status")


def _age_terms() -> list[dict[str, Any]]:
    return [{"var": "age"}, *({"var": "age", "knot": k} for k in AGE_KNOTS)]


def _levels(var: str, levels: Sequence[str]) -> list[dict[str, Any]]:
    return [{"var": var, "level": level} for level in levels]


# The logistic models' terms: a plain variable, a hinge max(0, x - knot), or a category indicator.
MODEL_TERMS: dict[str, list[dict[str, Any]]] = {
    "hypertension": [
        *_age_terms(),
        {"var": "gender", "level": "Male"},
        {"var": "bmi"},
        {"var": "avg_glucose_level"},
        {"var": "ever_married", "level": "Yes"},
        *_levels("smoking_status", ("formerly smoked", "smokes")),
    ],
    "heart_disease": [
        *_age_terms(),
        {"var": "gender", "level": "Male"},
        {"var": "hypertension"},
        {"var": "bmi"},
        {"var": "avg_glucose_level"},
        *_levels("smoking_status", ("formerly smoked", "smokes")),
    ],
    "stroke": [
        *_age_terms(),
        {"var": "hypertension"},
        {"var": "heart_disease"},
        {"var": "avg_glucose_level"},
        {"var": "avg_glucose_level", "knot": 150.0},
        {"var": "bmi"},
        {"var": "gender", "level": "Male"},
        {"var": "ever_married", "level": "Yes"},
        *_levels("work_type", ("Govt_job", "Private", "Self-employed")),
        {"var": "Residence_type", "level": "Urban"},
        *_levels("smoking_status", ("formerly smoked", "smokes", "Unknown")),
    ],
    "bmi_missing": [
        {"var": "stroke"},
        {"var": "age"},
        {"var": "age", "knot": 60.0},
        {"var": "hypertension"},
        {"var": "heart_disease"},
        {"var": "avg_glucose_level"},
    ],
}


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _read_params(path: str) -> str:
    return Path(path).read_text()


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """The fitted parameters (the packaged ``params.json`` unless ``path`` is given).

    A fresh copy each call: edit it freely (e.g. shift the age histogram to simulate drift) and
    pass it to :func:`simulate_patients` as ``params``.
    """
    return json.loads(_read_params(str(path or PARAMS_PATH)))


def _categories(name: str) -> tuple[str, ...]:
    return FIELDS_BY_NAME[name].categories  # type: ignore[union-attr]


def _band_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=float), values, side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def _draw_rows(rng: np.random.Generator, table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each row, a category index drawn from ``table[rows[i]]`` (rows of probabilities)."""
    cum = np.cumsum(table, axis=1)
    cum /= cum[:, -1:]
    u = rng.random(len(rows))
    if table.shape[0] == 1:  # one distribution for every row (e.g. the age histogram)
        return np.minimum(np.searchsorted(cum[0], u, side="right"), table.shape[1] - 1)
    out = np.zeros(len(rows), dtype=np.int64)
    for j in range(table.shape[1] - 1):  # few categories: one vector compare each
        out += u >= cum[rows, j]
    return out


def _draw_age(rng: np.random.Generator, spec: Mapping[str, Any], n: int) -> np.ndarray:
    weights = np.asarray(spec["weights"], dtype=float)
    years = spec["start"] + spec["bin_width"] * _draw_rows(rng, weights[None, :], np.zeros(n, int))
    years = years.astype(float)
    u = rng.random(n)
    step = float(spec["fraction_step"])
    fractional = years < spec["integer_from"]
    if step > 0:
        slots = int(spec["fraction_slots"])
        # Age 0 exactly does not occur: in the first year the grid starts one step in.
        k = np.where(years == 0, 1 + np.floor(u * (slots - 1)), np.floor(u * slots))
        offset = np.round(k * step, 6)
    else:
        offset = u * spec["bin_width"]
    return np.where(fractional, years + offset, years)


def _design_value(term: Mapping[str, Any], cols: Mapping[str, np.ndarray]) -> np.ndarray:
    x = cols[term["var"]]
    if "level" in term:
        return (x == _categories(term["var"]).index(term["level"])).astype(float)
    if "knot" in term:
        return np.maximum(x - term["knot"], 0.0)
    return x.astype(float)


def _linear_predictor(model: Mapping[str, Any], cols: Mapping[str, np.ndarray]) -> np.ndarray:
    eta = np.full(len(next(iter(cols.values()))), float(model["intercept"]))
    for term in model["terms"]:
        eta += term["coef"] * _design_value(term, cols)
    return eta


def _draw_numeric(
    rng: np.random.Generator, spec: Mapping[str, Any], age: np.ndarray
) -> dict[str, np.ndarray]:
    """Glucose and bmi from age-dependent quantile functions coupled by a Gaussian copula.

    Each band's quantile function sits at the band's typical age; a patient between two of those
    ages gets the linear blend of the two (so bmi climbs smoothly through childhood instead of in
    steps).
    """
    n = len(age)
    anchors = np.asarray(spec["band_ages"], dtype=float)
    last = len(anchors) - 1
    lo = np.clip(np.searchsorted(anchors, age, side="right") - 1, 0, last)
    hi = np.minimum(lo + 1, last)
    span = np.where(hi > lo, anchors[hi] - anchors[lo], 1.0)
    w = np.clip((age - anchors[lo]) / span, 0.0, 1.0)
    rho_by_band = np.asarray(spec["copula_rho"], dtype=float)
    rho = (1 - w) * rho_by_band[lo] + w * rho_by_band[hi]
    z1 = rng.standard_normal(n)
    z2 = rho * z1 + np.sqrt(1.0 - rho**2) * rng.standard_normal(n)
    levels = np.asarray(spec["quantile_levels"], dtype=float)
    out: dict[str, np.ndarray] = {}
    for name, z in (("avg_glucose_level", z1), ("bmi", z2)):
        # Linear interpolation in each band's quantile table, for all rows at once.
        u = ndtr(z)
        table = np.asarray(spec[name], dtype=float)
        j = np.clip(np.searchsorted(levels, u, side="right"), 1, len(levels) - 1)
        t = (u - levels[j - 1]) / (levels[j] - levels[j - 1])
        at_lo = table[lo, j - 1] + t * (table[lo, j] - table[lo, j - 1])
        at_hi = table[hi, j - 1] + t * (table[hi, j] - table[hi, j - 1])
        values = (1 - w) * at_lo + w * at_hi
        field = FIELDS_BY_NAME[name]  # hand-edited parameters still give valid values
        values = np.clip(values, field.low, field.high)  # type: ignore[union-attr]
        out[name] = np.round(values, spec["decimals"][name])
    return out


def _condition_rows(
    name: str, spec: Mapping[str, Any], age_band: np.ndarray, child: np.ndarray
) -> np.ndarray:
    by = spec["by"]
    if not by:
        return np.zeros(len(age_band), dtype=np.int64)
    if by == ["age_band"]:
        return age_band
    return age_band * 2 + child


def simulate_patients(
    n: int,
    seed: int = 0,
    *,
    with_label: bool = True,
    id_start: int = 1,
    params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """``n`` synthetic patients in the raw schema (``RAW_COLUMNS`` order, bmi NaN when missing).

    Deterministic for a given ``seed``; ids run from ``id_start``. The ``stroke`` column is present
    only when ``with_label``.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p = params if params is not None else load_params()
    rng = np.random.default_rng(seed)
    cols = _draw_codes(rng, p, n)

    frame: dict[str, Any] = {ID: np.arange(id_start, id_start + n, dtype=np.int64)}
    for name in FEATURES:
        if name in CONDITIONING:
            frame[name] = np.asarray(_categories(name), dtype=object)[cols[name]]
        elif name in ("hypertension", "heart_disease"):
            frame[name] = cols[name].astype(np.int64)
        else:
            frame[name] = cols[name]
    frame["bmi"] = np.where(cols["bmi_missing"] == 1, np.nan, cols["bmi"])
    if with_label:
        frame[TARGET] = cols[TARGET].astype(np.int64)
    columns = [c for c in RAW_COLUMNS if c in frame]
    return pd.DataFrame({c: frame[c] for c in columns})


def _draw_codes(rng: np.random.Generator, p: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    """Every column as numbers (categories as codes), in the order of the generative chain."""
    cols: dict[str, np.ndarray] = {"age": _draw_age(rng, p["age"], n)}
    age_band = _band_index(cols["age"], p["category_bands"])
    child = np.zeros(n, dtype=np.int64)
    for name in _CAT_ORDER:
        spec = p["categorical"][name]
        table = np.asarray(spec["probs"], dtype=float)
        cols[name] = _draw_rows(rng, table, _condition_rows(name, spec, age_band, child))
        if name == "work_type":
            child = (cols[name] == _categories("work_type").index(CHILD_WORK)).astype(np.int64)
    cols.update(_draw_numeric(rng, p["numeric"], cols["age"]))
    for name in ("hypertension", "heart_disease", TARGET, "bmi_missing"):
        prob = expit(_linear_predictor(p["models"][name], cols))
        cols[name] = (rng.random(n) < prob).astype(np.int64)
    return cols


def write_patients(df: pd.DataFrame, path: str | Path) -> Path:
    """Write patients as CSV (missing values written ``N/A``, as Kaggle does) or Parquet by suffix.

    CSV goes through Arrow (about ten times faster than pandas at a million rows); numbers are
    written in their shortest form (``67``, ``0.08``, ``228.69``) like the Kaggle file.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        df.to_parquet(path, index=False)
        return path
    table = pa.Table.from_pandas(df, preserve_index=False)
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        if column.null_count:
            text = pc.fill_null(pc.cast(column, pa.string()), "N/A")
            table = table.set_column(i, name, text)
    try:
        options = pacsv.WriteOptions(quoting_style="none", quoting_header="none")
        pacsv.write_csv(table, path, options)
    except pa.ArrowInvalid:  # a value holds a comma, quote or line break: let pandas quote it
        df.to_csv(path, index=False, na_rep="N/A", lineterminator="\n")
    return path


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _round(values: Any, digits: int = 6) -> Any:
    """Floats rounded for a small, readable JSON file."""
    arr = np.asarray(values, dtype=float)
    rounded = np.round(arr, digits)
    return rounded.tolist() if arr.ndim else float(rounded)


def _decimals(values: np.ndarray, max_decimals: int = 4) -> int:
    values = values[~np.isnan(values)]
    for d in range(max_decimals + 1):
        if np.allclose(values, np.round(values, d), atol=1e-9):
            return d
    return max_decimals


def _probs(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))


def _fit_age(age: np.ndarray) -> dict[str, Any]:
    top = int(np.floor(age.max())) + 1
    counts = np.bincount(np.floor(age).astype(int), minlength=top)[:top].astype(float)
    fractional = age[~np.isclose(age, np.round(age))]
    if len(fractional):
        integer_from = int(np.ceil(fractional.max()))
        small = np.unique(np.round(age[age < integer_from], 6))
        steps = np.diff(np.concatenate([[0.0], small]))
        step = float(np.round(steps[steps > 1e-9].min(), 6))
        within = (small - np.floor(small)) / step
        slots = int(np.round(within.max())) + 1
        if not np.allclose(within, np.round(within), atol=1e-3):
            step, slots = 0.0, 0
    else:
        integer_from, step, slots = 0, 0.0, 0
    return {
        "start": 0,
        "bin_width": 1,
        "weights": _round(_probs(counts)),
        "integer_from": integer_from,
        "fraction_step": step,
        "fraction_slots": slots,
    }


def _fit_categorical(df: pd.DataFrame, age_band: np.ndarray, n_bands: int) -> dict[str, Any]:
    child = (df["work_type"] == CHILD_WORK).to_numpy().astype(int)
    out: dict[str, Any] = {}
    for name in _CAT_ORDER:
        cats = _categories(name)
        codes = pd.Categorical(df[name], categories=cats).codes
        overall = _probs(np.bincount(codes[codes >= 0], minlength=len(cats)).astype(float))
        by = list(CONDITIONING[name])
        band_tables = []
        for b in range(n_bands):
            sel = (age_band == b) & (codes >= 0)
            counts = np.bincount(codes[sel], minlength=len(cats)).astype(float)
            if name == "gender":
                band_tables.append(
                    (counts + SHRINK_GENDER * overall) / (counts.sum() + SHRINK_GENDER)
                )
            else:
                band_tables.append(_probs(counts) if counts.sum() else overall)
        labels = [
            f"age {lo:g}-{hi:g}" for lo, hi in zip(CATEGORY_BANDS, CATEGORY_BANDS[1:], strict=False)
        ]
        if not by:
            table = [overall]
            keys = ["all"]
        elif by == ["age_band"]:
            table = band_tables
            keys = labels
        else:
            table, keys = [], []
            for b in range(n_bands):
                for c in (0, 1):
                    sel = (age_band == b) & (child == c) & (codes >= 0)
                    counts = np.bincount(codes[sel], minlength=len(cats)).astype(float)
                    prior = band_tables[b]
                    table.append(
                        (counts + SHRINK_CHILD_CELL * prior) / (counts.sum() + SHRINK_CHILD_CELL)
                    )
                    keys.append(f"{labels[b]}, work {'children' if c else 'other'}")
        out[name] = {
            "categories": list(cats),
            "by": by,
            "rows": keys,
            "probs": [_round(row, 5) for row in table],
        }
    return out


def _fit_numeric(df: pd.DataFrame) -> dict[str, Any]:
    from scipy.stats import norm

    age = df["age"].to_numpy(float)
    band = _band_index(age, NUMERIC_BANDS)
    glucose = df["avg_glucose_level"].to_numpy(float)
    bmi = df["bmi"].to_numpy(float)
    levels = np.asarray(QUANTILE_LEVELS)
    spec: dict[str, Any] = {
        "bands": list(NUMERIC_BANDS),
        "band_ages": [],
        "quantile_levels": list(QUANTILE_LEVELS),
        "decimals": {"avg_glucose_level": _decimals(glucose), "bmi": _decimals(bmi)},
        "avg_glucose_level": [],
        "bmi": [],
        "copula_rho": [],
    }
    for b in range(len(NUMERIC_BANDS) - 1):
        sel = band == b
        lo, hi = NUMERIC_BANDS[b], NUMERIC_BANDS[b + 1]
        typical = float(np.median(age[sel])) if sel.any() else (lo + min(hi, age.max())) / 2
        spec["band_ages"].append(round(typical, 3))
        g, m = glucose[sel & ~np.isnan(glucose)], bmi[sel & ~np.isnan(bmi)]
        if len(g) < 10:  # a band the source does not cover: borrow the whole population
            g = glucose[~np.isnan(glucose)]
        if len(m) < 10:
            m = bmi[~np.isnan(bmi)]
        spec["avg_glucose_level"].append(_round(np.quantile(g, levels), 3))
        spec["bmi"].append(_round(np.quantile(m, levels), 3))
        both = sel & ~np.isnan(glucose) & ~np.isnan(bmi)
        rho = 0.0
        if both.sum() >= 30:
            # Normal scores of the ranks: the Gaussian copula's correlation.
            zg = norm.ppf((pd.Series(glucose[both]).rank().to_numpy() - 0.5) / both.sum())
            zb = norm.ppf((pd.Series(bmi[both]).rank().to_numpy() - 0.5) / both.sum())
            rho = float(np.clip(np.corrcoef(zg, zb)[0, 1], -0.95, 0.95))
        spec["copula_rho"].append(round(rho, 4))
    return spec


def _codes_frame(df: pd.DataFrame) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for field in CATEGORICAL_FIELDS:
        cols[field.name] = pd.Categorical(df[field.name], categories=field.categories).codes
    for name in ("age", "avg_glucose_level", "hypertension", "heart_disease", TARGET):
        cols[name] = df[name].to_numpy(float)
    bmi = df["bmi"].to_numpy(float)
    cols["bmi_missing"] = np.isnan(bmi).astype(float)
    cols["bmi"] = np.where(np.isnan(bmi), np.nanmedian(bmi), bmi)
    return cols


def _fit_logistic(
    terms: list[dict[str, Any]], cols: Mapping[str, np.ndarray], y: np.ndarray, c: float = 1.0
) -> dict[str, Any]:
    """L2 logistic regression on standardised terms, coefficients mapped back to raw units."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:  # nobody (or everybody) has it: a constant rate, no slopes
        rate = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
        return {
            "intercept": round(float(logit(rate)), 6),
            "terms": [{**t, "coef": 0.0} for t in terms],
        }
    x = np.column_stack([_design_value(t, cols) for t in terms])
    mean, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / sd, y.astype(int))
    coef = model.coef_[0] / sd
    intercept = float(model.intercept_[0] - np.sum(coef * mean))
    return {
        "intercept": round(intercept, 6),
        "terms": [{**t, "coef": float(f"{b:.6g}")} for t, b in zip(terms, coef, strict=True)],
    }


def _calibrate_intercepts(
    params: dict[str, Any], targets: Mapping[str, float], n: int = 200_000, rounds: int = 4
) -> None:
    """Shift each model's intercept so simulated rates match the source's (the chain compounds
    small marginal mismatches otherwise)."""
    for _ in range(rounds):
        cols = _draw_codes(np.random.default_rng(12345), params, n)
        for name, target in targets.items():
            rate = float(np.clip(cols[name].mean(), 1e-6, 1 - 1e-6))
            target = float(np.clip(target, 1e-6, 1 - 1e-6))
            model = params["models"][name]
            model["intercept"] = round(model["intercept"] + float(logit(target) - logit(rate)), 6)


def fit_simulator(real_df: pd.DataFrame) -> dict[str, Any]:
    """Summary parameters of a real, validated patient frame (typed, with a ``stroke`` label)."""
    df = real_df.reset_index(drop=True)
    missing = [c for c in (*FEATURES, TARGET) if c not in df.columns]
    if missing:
        raise ValueError(f"cannot fit the simulator: missing column(s) {', '.join(missing)}")
    age = df["age"].to_numpy(float)
    n_bands = len(CATEGORY_BANDS) - 1
    cols = _codes_frame(df)
    params: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source_rows": len(df),
        "source_rates": {
            name: round(float(np.nanmean(cols[name])), 6)
            for name in ("hypertension", "heart_disease", TARGET, "bmi_missing")
        },
        "age": _fit_age(age),
        "category_bands": list(CATEGORY_BANDS),
        "categorical": _fit_categorical(df, _band_index(age, CATEGORY_BANDS), n_bands),
        "numeric": _fit_numeric(df),
        "models": {
            name: _fit_logistic(terms, cols, cols[name]) for name, terms in MODEL_TERMS.items()
        },
    }
    _calibrate_intercepts(params, params["source_rates"])
    return params


def fit_from_file(path: str | Path) -> dict[str, Any]:
    """Validate a real labelled patient file and fit the simulator on its valid rows."""
    from stroke_dagster.io.readers import read_patient_file
    from stroke_dagster.io.validation import validate_patients

    result = validate_patients(read_patient_file(path), require_label=True)
    return fit_simulator(result.valid)


def _to_json(value: Any, indent: int = 0) -> str:
    """JSON with flat lists and flat objects on one line each: small and easy to read."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        if all(not isinstance(v, dict | list) for v in value.values()):
            return json.dumps(value)
        items = [f"{inner}{json.dumps(k)}: {_to_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return json.dumps(value)
        items = [f"{inner}{_to_json(v, indent + 2)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)


def save_params(params: Mapping[str, Any], path: str | Path = PARAMS_PATH) -> Path:
    """Write the parameters as JSON (one line per table row, term or band)."""
    Path(path).write_text(_to_json(params) + "\n")
    _read_params.cache_clear()
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stroke_dagster.simulate.generator",
        description="Fit the synthetic-patient generator's parameters from a real labelled file.",
    )
    parser.add_argument("--fit", required=True, metavar="PATH", help="real patient CSV/Parquet")
    parser.add_argument("--params-out", default=str(PARAMS_PATH), metavar="PATH")
    args = parser.parse_args(argv)
    from stroke_dagster.core.errors import InputError

    try:
        params = fit_from_file(args.fit)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = save_params(params, args.params_out)
    print(json.dumps({"params": str(out), "bytes": out.stat().st_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
