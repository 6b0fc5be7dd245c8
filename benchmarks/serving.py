"""Online scoring latency and throughput, measured the way a client sees them.

Trains a champion with the default settings (``run_training`` on simulated patients) in a
temporary STROKE_HOME (or reuses ``--home`` if it already has one), then for each telemetry mode
starts ``stroke serve`` (uvicorn; httptools and uvloop when installed) in a subprocess and
measures from *separate client processes* that use only the standard library (``http.client``,
one keep-alive connection each):

- sequential: one client, ``--requests`` single-patient ``POST /predict`` after a warm-up:
  p50 / p99 latency and requests/s;
- concurrency 8: eight client processes at once, ``--requests`` each: p50 / p99 and the total
  throughput.

Where the time goes, printed beside: one row through the service's compiled scorer, and one
whole request through the ASGI application in this process (middleware, telemetry, body
parsing and validation, scoring, JSON answer) without any network or HTTP server. The rest of
the loopback latency is uvicorn, the kernel and the client. Modes alternate over ``--rounds``
rounds; the figures are medians over rounds. Targets: sequential single-patient p50 <= 1 ms and
p99 <= 3 ms with telemetry on.

    .venv/bin/python benchmarks/serving.py [--requests 2000] [--rounds 2] [--home DIR]
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
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_P50_MS, TARGET_P99_MS = 1.0, 3.0
CONCURRENCY = 8

# The client: standard library only, one keep-alive connection, started at an agreed instant.
CLIENT = r"""
import http.client, json, sys, time
port, n, start_at, bodies = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
bodies = [b.encode() for b in json.load(open(bodies))]
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Content-Type": "application/json"}
def post(body):
    conn.request("POST", "/predict", body, headers)
    answer = conn.getresponse()
    answer.read()
    if answer.status != 200:
        raise SystemExit(f"status {answer.status}")
for i in range(200):
    post(bodies[i % len(bodies)])
while time.time() < start_at:
    time.sleep(0.001)
latencies = []
clock = time.perf_counter
began = time.time()
for i in range(n):
    t0 = clock()
    post(bodies[i % len(bodies)])
    latencies.append(clock() - t0)
ended = time.time()
print(json.dumps({"latencies": latencies, "began": began, "ended": ended}))
"""


def ensure_champion(home: Path, n_patients: int) -> str:
    """Train and register a champion with the default settings unless ``home`` has one."""
    os.environ["STROKE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.model.registry import resolve_alias

    version = resolve_alias("champion", settings=load_settings())
    if version is not None:
        return version
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.defs.training_command import run_training
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    csv = write_patients(simulate_patients(n_patients, seed=0), home / "train.csv")
    started = time.perf_counter()
    summary = run_training(csv, settings=load_settings())
    print(
        f"trained champion v{summary['version']} in {time.perf_counter() - started:.0f} s "
        f"(params {summary['best_params']})"
    )
    return str(summary["version"])


def patients(n: int) -> list[dict[str, Any]]:
    from stroke_dagster.simulate.generator import simulate_patients

    df = simulate_patients(n, seed=99, with_label=False)
    rows = []
    for record in df.to_dict(orient="records"):
        rows.append(
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()}
        )
        rows[-1]["id"] = str(rows[-1]["id"])
    return rows


def median_us(fn: Any, k: int) -> float:
    for _ in range(20):
        fn()
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def scorer_cost(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median microseconds for one row: the registered pipeline and the compiled scorer."""
    from stroke_dagster.api.scorer import Scorer, records_frame
    from stroke_dagster.core.settings import load_settings
    from stroke_dagster.model.registry import load_model

    model = load_model("champion", settings=load_settings())
    scorer = Scorer(model.pipeline)
    frame = records_frame(rows[:1])
    return {
        "pipeline_us": median_us(lambda: scorer.pipeline.predict_proba(frame), 100),
        "compiled_us": median_us(lambda: scorer.predict(rows[:1]), 2000),
        "compiled_used": float(scorer.fast),
    }


def asgi_cost(body: bytes, telemetry: bool, n: int = 2000) -> float:
    """Median microseconds of one ``POST /predict`` through the ASGI app, no server, no socket."""
    import asyncio

    os.environ["STROKE_TELEMETRY"] = "1" if telemetry else "0"
    os.environ["STROKE_API_RELOAD_SECONDS"] = "0"
    from stroke_dagster.api.app import create_app

    app = create_app()
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])
        status = []

        async def receive() -> dict[str, Any]:
            return next(messages, {"type": "http.disconnect"})

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        assert status == [200], status

    async def run() -> float:
        async with app.router.lifespan_context(app):
            while app.state.holder.current is None:
                await asyncio.sleep(0.05)
            for _ in range(200):
                await one()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await one()
                times.append(time.perf_counter() - t0)
            return statistics.median(times) * 1e6

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int) -> list[str]:
    stroke = Path(sys.executable).with_name("stroke")
    check = subprocess.run([str(stroke), "serve", "--help"], capture_output=True)
    if check.returncode == 0:
        return [str(stroke), "serve", "--host", "127.0.0.1", "--port", str(port)]
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
            "STROKE_API_RELOAD_SECONDS": "30",
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


def clients(port: int, bodies_file: Path, n: int, count: int) -> dict[str, float]:
    """``count`` client processes, ``n`` requests each, started together."""
    start_at = time.time() + 2.0 + 0.3 * count  # after every client has started and warmed up
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(port), str(n), str(start_at), str(bodies_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"client failed ({proc.returncode})")
        results.append(json.loads(out))
    latencies = np.concatenate([r["latencies"] for r in results]) * 1000
    began = min(r["began"] for r in results)
    ended = max(r["ended"] for r in results)
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "rps": len(latencies) / (ended - began),
    }


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per client and run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patients", type=int, default=5110, help="training set size")
    parser.add_argument("--home", type=Path, help="STROKE_HOME to reuse (kept afterwards)")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    home = args.home or Path(tempfile.mkdtemp(prefix="stroke-serving-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    try:
        version = ensure_champion(home, args.patients)
        rows = patients(500)
        bodies_file = home / "bench-bodies.json"
        bodies_file.write_text(json.dumps([json.dumps(r) for r in rows]))
        scorer = scorer_cost(rows)
        body = json.dumps(rows[0]).encode()
        app_us = {mode: asgi_cost(body, telemetry=mode == "on") for mode in ("on", "off")}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            mode: {"sequential": [], "concurrent": []} for mode in ("on", "off")
        }
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                server = Server(home, telemetry=mode == "on")
                try:
                    runs[mode]["sequential"].append(
                        clients(server.port, bodies_file, args.requests, 1)
                    )
                    runs[mode]["concurrent"].append(
                        clients(server.port, bodies_file, args.requests, CONCURRENCY)
                    )
                finally:
                    server.stop()
        figures = {
            mode: {kind: median_of(values) for kind, values in by_kind.items()}
            for mode, by_kind in runs.items()
        }
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    print(
        f"\nStrokeRF v{version}, {os.cpu_count()} cores, {args.requests} requests per client "
        f"and run, median of {args.rounds} round(s); load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other processes compete for the cores)"
    )
    print(
        f"one row, in process: pipeline predict_proba {scorer['pipeline_us']:.0f} us | compiled "
        f"scorer {scorer['compiled_us']:.0f} us (used: {bool(scorer['compiled_used'])})"
    )
    print(
        f"one POST /predict through the ASGI app, no network: telemetry on {app_us['on']:.0f} us"
        f" | off {app_us['off']:.0f} us"
    )
    print(f"{'telemetry':<10} {'run':<15} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for mode in ("off", "on"):
        for kind, label in (("sequential", "sequential"), ("concurrent", "8 clients")):
            f = figures[mode][kind]
            print(f"{mode:<10} {label:<15} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} {f['rps']:8.0f}")
    seq = figures["on"]["sequential"]
    verdict = seq["p50_ms"] <= TARGET_P50_MS and seq["p99_ms"] <= TARGET_P99_MS
    print(
        f"target (telemetry on, sequential): p50 <= {TARGET_P50_MS:g} ms, p99 <= "
        f"{TARGET_P99_MS:g} ms -> {'met' if verdict else 'NOT met'}"
    )
    result = {"model_version": version, "scorer": scorer, "asgi_us": app_us, "figures": figures}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
