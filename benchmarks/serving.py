"""Online scoring latency and throughput: ``stroke serve`` on loopback, telemetry on vs off.

Trains a champion with the default settings (``run_training`` on simulated patients) in a
temporary STROKE_HOME (or reuses ``--home`` if it already has one), then for each telemetry mode
starts ``stroke serve`` in a subprocess and measures, over HTTP keep-alive (httpx):

- 1,000 sequential single-patient ``POST /predict`` requests: p50 / p99 latency, requests/s;
- the same at concurrency 8 (8 threads, one keep-alive connection each);

beside the in-process time of one row through the registered pipeline (``predict_proba`` as
registered, with ``n_jobs=1``, and the service's compiled path). Modes alternate over
``--rounds`` rounds; the figures are medians over rounds. Targets: p50 <= 10 ms and
p99 <= 30 ms sequential on 2 cores; telemetry costs <= 10 % of throughput.

    .venv/bin/python benchmarks/serving.py [--requests 1000] [--rounds 2] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_P50_MS, TARGET_P99_MS, TARGET_TELEMETRY_COST = 10.0, 30.0, 0.10


def ensure_champion(home: Path, n_patients: int) -> str:
    """Train and register a champion with the default settings unless ``home`` has one."""
    os.environ["STROKE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from stroke_dagster.registry import resolve_alias

    version = resolve_alias("champion")
    if version is not None:
        return version
    from stroke_dagster.settings import load_settings
    from stroke_dagster.simulate import simulate_patients, write_patients
    from stroke_dagster.training_run import run_training

    csv = write_patients(simulate_patients(n_patients, seed=0), home / "train.csv")
    started = time.perf_counter()
    summary = run_training(csv, settings=load_settings())
    print(
        f"trained champion v{summary['version']} in {time.perf_counter() - started:.0f} s "
        f"(params {summary['best_params']})"
    )
    return str(summary["version"])


def patients(n: int) -> list[dict[str, Any]]:
    from stroke_dagster.simulate import simulate_patients

    df = simulate_patients(n, seed=99, with_label=False)
    rows = []
    for record in df.to_dict(orient="records"):
        rows.append(
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}
        )
        rows[-1]["id"] = str(rows[-1]["id"])
    return rows


def in_process(rows: list[dict[str, Any]], repeats: int = 300) -> dict[str, float]:
    """Median ms for one row: registered pipeline, pipeline with n_jobs=1, compiled path."""
    from stroke_dagster.api.scorer import Scorer, records_frame
    from stroke_dagster.registry import load_model

    model = load_model("champion")
    scorer = Scorer(model.pipeline)
    frame = records_frame(rows[:1])

    def median_ms(fn: Any, k: int) -> float:
        fn()
        times = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    return {
        "predict_proba_registered_ms": median_ms(lambda: model.pipeline.predict_proba(frame), 50),
        "predict_proba_n_jobs1_ms": median_ms(lambda: scorer.pipeline.predict_proba(frame), 100),
        "compiled_path_ms": median_ms(lambda: scorer.predict(rows[:1]), repeats),
        "compiled_path_used": float(scorer.fast),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int) -> list[str]:
    stroke = Path(sys.executable).with_name("stroke")
    check = subprocess.run([str(stroke), "serve", "--help"], capture_output=True)
    if check.returncode == 0:
        return [str(stroke), "serve", "--host", "127.0.0.1", "--port", str(port)]
    # the dispatcher cannot load (a command module missing): run the same uvicorn call directly
    print("note: `stroke serve` unavailable, using python -m uvicorn with the same app factory")
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "stroke_dagster.api.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


class Server:
    def __init__(self, home: Path, telemetry: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "STROKE_HOME": str(home),
            "STROKE_TELEMETRY": "1" if telemetry else "0",
        }
        self.process = subprocess.Popen(
            serve_command(self.port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def sequential(url: str, rows: list[dict[str, Any]], n: int) -> dict[str, float]:
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for i in range(100):  # warm-up
            http.post("/predict", json=rows[i % len(rows)])
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            answer = http.post("/predict", json=rows[i % len(rows)])
            latencies.append(time.perf_counter() - t0)
            if answer.status_code != 200:
                raise RuntimeError(f"request failed: {answer.status_code} {answer.text}")
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "rps": n / elapsed,
    }


def concurrent(url: str, rows: list[dict[str, Any]], n: int, workers: int = 8) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[int] = []

    def work(offset: int) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=30) as http:
            http.post("/predict", json=rows[offset])
            for i in range(n // workers):
                t0 = time.perf_counter()
                answer = http.post("/predict", json=rows[(offset + i) % len(rows)])
                mine.append(time.perf_counter() - t0)
                if answer.status_code != 200:
                    errors.append(answer.status_code)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests: {sorted(set(errors))}")
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "rps": len(latencies) / elapsed,
    }


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patients", type=int, default=5110, help="training set size")
    parser.add_argument("--home", type=Path, help="STROKE_HOME to reuse (kept afterwards)")
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="stroke-serving-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        version = ensure_champion(home, args.patients)
        rows = patients(500)
        bare = in_process(rows)
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            mode: {"sequential": [], "concurrent": []} for mode in ("on", "off")
        }
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                server = Server(home, telemetry=mode == "on")
                try:
                    runs[mode]["sequential"].append(sequential(server.url, rows, args.requests))
                    runs[mode]["concurrent"].append(concurrent(server.url, rows, args.requests))
                finally:
                    server.stop()
        figures = {
            mode: {kind: median_of(values) for kind, values in by_kind.items()}
            for mode, by_kind in runs.items()
        }
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    cost = {
        kind: 1.0 - figures["on"][kind]["rps"] / figures["off"][kind]["rps"]
        for kind in ("sequential", "concurrent")
    }
    print(
        f"\nStrokeRF v{version}, {os.cpu_count()} cores, {args.requests} requests per run, "
        f"median of {args.rounds} round(s)"
    )
    print(
        f"in-process, one row: registered predict_proba {bare['predict_proba_registered_ms']:.2f}"
        f" ms | n_jobs=1 {bare['predict_proba_n_jobs1_ms']:.2f} ms | compiled path "
        f"{bare['compiled_path_ms']:.3f} ms (service uses it: {bool(bare['compiled_path_used'])})"
    )
    print(f"{'telemetry':<10} {'run':<14} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for mode in ("off", "on"):
        for kind, label in (("sequential", "sequential"), ("concurrent", "concurrency 8")):
            f = figures[mode][kind]
            print(f"{mode:<10} {label:<14} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} {f['rps']:8.0f}")
    print(
        f"telemetry throughput cost: sequential {cost['sequential']:+.1%}, "
        f"concurrency 8 {cost['concurrent']:+.1%} (target <= {TARGET_TELEMETRY_COST:.0%})"
    )
    seq = figures["on"]["sequential"]
    verdict = seq["p50_ms"] <= TARGET_P50_MS and seq["p99_ms"] <= TARGET_P99_MS
    print(
        f"targets (telemetry on, sequential): p50 <= {TARGET_P50_MS:g} ms, p99 <= "
        f"{TARGET_P99_MS:g} ms -> {'met' if verdict else 'NOT met'}"
    )
    result = {
        "model_version": version,
        "in_process": bare,
        "figures": figures,
        "telemetry_cost": cost,
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
