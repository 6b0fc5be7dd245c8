"""Start-up cost of ``stroke score`` on 10 patients: model cache, alias resolution, MLflow server.

Self-contained: in a temporary directory it trains a small champion with the project's code
(``run_training`` on simulated patients) into a local sqlite store, starts a real ``mlflow server``
(HTTP, its own sqlite backend, ``--serve-artifacts``) and trains a champion into it the same way.
Then it times whole ``python -m stroke_dagster.cli score --input <10 patients> --output X``
processes (wall clock, process start included), the cases interleaved over ``--rounds`` rounds:

- local, warm cache, cached alias resolution (``STROKE_MODEL_ALIAS_TTL`` 3600);
- local, warm cache, fresh resolution (TTL 0: ``MlflowClient`` on the sqlite store);
- server, warm cache, cached resolution;
- server, warm cache, fresh resolution (TTL 0: ``MlflowClient`` over HTTP);
- server, cold cache (cache directory removed before each run: resolve, download, compile);
- local, cold cache.

It prints each case's median and the differences the targets name: warm (cached resolution)
<= 2 s; the server costs at most 1 s more than the local store. Every run's output must be
identical within a store.

    .venv/bin/python benchmarks/model_loading.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_TARGET_S = 2.0
SERVER_EXTRA_TARGET_S = 1.0

TRAIN = """
import sys
from pathlib import Path
from stroke_dagster.core.settings import load_settings
from stroke_dagster.defs.training_command import run_training
summary = run_training(Path(sys.argv[1]), settings=load_settings(), n_trials=2, seed=0)
print(summary["version"], summary["alias"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STROKE_", "MLFLOW_"))}
    env.update(PYTHONPATH=str(ROOT), STROKE_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    env.update(extra)
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return env


def start_server(work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "mlflow-server.log", "wb")  # noqa: SIM115 (lives as long as the server)
    mlflow = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{work / 'server.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(work / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the server and its workers stop together
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
        if process.poll() is not None:
            break
    stop_server(process)
    raise SystemExit(f"mlflow server did not start: see {work / 'mlflow-server.log'}")


def stop_server(process: subprocess.Popen) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def score(env: dict[str, str], patients: Path, output: Path) -> float:
    command = [sys.executable, "-m", "stroke_dagster.cli", "score", "--input", str(patients)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--output", str(output)], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"stroke score failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from stroke_dagster.simulate.generator import simulate_patients, write_patients

    work = Path(tempfile.mkdtemp(prefix="stroke-model-loading-"))
    server = None
    try:
        train_csv, patients = work / "train.csv", work / "patients.csv"
        write_patients(simulate_patients(1500, seed=7), train_csv)
        write_patients(simulate_patients(10, seed=11, with_label=False), patients)
        local_home, server_home = work / "local", work / "server-home"
        server, url = start_server(work)
        for home, extra in ((local_home, {}), (server_home, {"MLFLOW_TRACKING_URI": url})):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", TRAIN, str(train_csv)],
                env=base_env(home, **extra),
                check=True,
                capture_output=True,
            )
            where = extra.get("MLFLOW_TRACKING_URI", "local sqlite store")
            print(f"trained a champion into {where} in {time.perf_counter() - started:.1f} s")

        cold_local, cold_server = work / "cold-local", work / "cold-server"
        cases: dict[str, tuple[dict[str, str], Path | None]] = {
            "local  warm cache, cached resolution": (
                base_env(local_home, STROKE_MODEL_ALIAS_TTL="3600"),
                None,
            ),
            "local  warm cache, fresh resolution": (
                base_env(local_home, STROKE_MODEL_ALIAS_TTL="0"),
                None,
            ),
            "server warm cache, cached resolution": (
                base_env(server_home, MLFLOW_TRACKING_URI=url, STROKE_MODEL_ALIAS_TTL="3600"),
                None,
            ),
            "server warm cache, fresh resolution": (
                base_env(server_home, MLFLOW_TRACKING_URI=url, STROKE_MODEL_ALIAS_TTL="0"),
                None,
            ),
            "server cold cache": (
                base_env(
                    server_home, MLFLOW_TRACKING_URI=url, STROKE_MODEL_CACHE_DIR=str(cold_server)
                ),
                cold_server,
            ),
            "local  cold cache": (
                base_env(local_home, STROKE_MODEL_CACHE_DIR=str(cold_local)),
                cold_local,
            ),
        }
        # Warm both caches (and the alias resolutions) once; check the outputs agree.
        score(cases["local  warm cache, cached resolution"][0], patients, work / "warmup.csv")
        score(cases["server warm cache, cached resolution"][0], patients, work / "warmup-srv.csv")
        times: dict[str, list[float]] = {name: [] for name in cases}
        outputs: dict[str, set[bytes]] = {"local": set(), "server": set()}
        for _ in range(args.rounds):
            for name, (env, cold) in cases.items():
                if cold is not None:
                    shutil.rmtree(cold, ignore_errors=True)
                output = work / "out.csv"
                times[name].append(score(env, patients, output))
                outputs[name.split()[0]].add(output.read_bytes())
        print(f"\nstroke score, 10 patients, wall seconds (median of {args.rounds} runs):")
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, value in medians.items():
            spread = ", ".join(f"{v:.2f}" for v in times[name])
            print(f"  {name:<38} {value:6.2f}   ({spread})")
        local_cached = medians["local  warm cache, cached resolution"]
        local_fresh = medians["local  warm cache, fresh resolution"]
        server_fresh = medians["server warm cache, fresh resolution"]
        server_cached = medians["server warm cache, cached resolution"]
        print("\ndifferences:")
        print(f"  server fresh - local fresh resolution : {server_fresh - local_fresh:+.2f} s")
        print(f"  server fresh - local cached resolution: {server_fresh - local_cached:+.2f} s")
        print(f"  server cached - local cached          : {server_cached - local_cached:+.2f} s")
        print(f"  fresh - cached resolution (local)     : {local_fresh - local_cached:+.2f} s")
        print(
            f"  server cold - server warm fresh       : "
            f"{medians['server cold cache'] - server_fresh:+.2f} s"
        )
        print(
            f"\ntargets: warm (cached resolution) <= {WARM_TARGET_S:.0f} s: "
            f"{'met' if local_cached <= WARM_TARGET_S else 'NOT met'} ({local_cached:.2f} s); "
            f"server <= local + {SERVER_EXTRA_TARGET_S:.0f} s (fresh resolution both): "
            f"{'met' if server_fresh - local_fresh <= SERVER_EXTRA_TARGET_S else 'NOT met'}"
        )
        same = all(len(v) == 1 for v in outputs.values())
        print(f"outputs identical across runs of each store: {same}")
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
