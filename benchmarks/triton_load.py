"""Load on a Triton server: N concurrent gRPC clients, p50/p99 latency and throughput, with and
without dynamic batching, 1 and 2 model instances.

    python -m benchmarks.triton_load [--repo DIR] [--clients 8] [--requests 96] [--max-seconds 90]
                                     [--tile 64] [--json out/benchmarks/triton_load.json]

Serves the repository's CPU config (ONNX Runtime in the Python backend) with the ``tritonserver``
bundled in nvidia-pytriton (``make serve-setup``), one server per variant, on 127.0.0.1 only.
Without ``--repo`` a repository is written from the bundled weights first. Each client sends
fixed-size LR tiles (1 x 3 x tile x tile, what ``app --backend triton`` sends) back to back;
a variant stops after ``--requests`` requests or ``--max-seconds``, whichever comes first. The
CPU cores are split between instances (2 instances x 1 thread on 2 cores), so the instance rows
compare the same hardware. "mean batch" is inferences / executions from the server's statistics.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from export.errors import ExportError, run_cli

VARIANTS = (  # (label, dynamic batching, instances)
    ("no batching, 1 instance", False, 1),
    ("dynamic batching, 1 instance", True, 1),
    ("no batching, 2 instances", False, 2),
    ("dynamic batching, 2 instances", True, 2),
)


def variant_repository(source_model: Path, folder: Path, *, dynamic: bool, instances: int, threads: int,
                       max_batch: int, queue_delay_us: int) -> Path:
    """A repository whose CPU config is this variant's; the version folder is the source's (symlink)."""
    from serve import repository
    model = folder / repository.MODEL_NAME
    (model / "configs").mkdir(parents=True)
    (model / "1").symlink_to(source_model / "1", target_is_directory=True)
    io = repository.onnx_io(source_model / "1" / "model.onnx")
    text = repository.cpu_config(io["inputs"], io["outputs"], max_batch=max_batch, instances=instances, threads=threads,
                             dynamic_batching=dynamic, queue_delay_us=queue_delay_us)
    repository.parse_config(text, "cpu.pbtxt")
    (model / "configs" / "cpu.pbtxt").write_text(text)
    return folder


def run_load(url: str, model: str, *, clients: int, requests: int, max_seconds: float, tile: int,
             seed: int = 0) -> dict:
    """``clients`` threads, one gRPC client each, sending tiles until ``requests`` or ``max_seconds``."""
    import tritonclient.grpc as grpcclient

    x = np.random.default_rng(seed).random((1, 3, tile, tile), dtype=np.float32)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = [0]
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if issued[0] >= requests:
                        return
                    issued[0] += 1
                inp = grpcclient.InferInput("lr", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                t0 = time.perf_counter()
                try:
                    client.infer(model, [inp], client_timeout=max(5.0, deadline - time.monotonic() + 5))
                except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                    with lock:
                        errors.append(" ".join(str(exc).split())[:200])
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
        finally:
            client.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max_seconds + 30)
    wall = time.perf_counter() - t0
    done = len(latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if done >= 2 else [float("nan")] * 99
    return {"requests": done, "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 3), "p50_ms": round(q[49] * 1e3, 1), "p99_ms": round(q[98] * 1e3, 1),
            "throughput_rps": round(done / wall, 2) if wall > 0 else None,
            "lr_mpix_per_s": round(done * tile * tile / wall / 1e6, 4) if wall > 0 else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.triton_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", help="model repository (default: written from the bundled weights)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (at most 64)")
    p.add_argument("--requests", type=int, default=96, help="requests per variant (at most 10000)")
    p.add_argument("--max-seconds", type=float, default=90.0, help="time cap per variant (at most 600)")
    p.add_argument("--tile", type=int, default=64, help="LR tile side of every request")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--queue-delay-us", type=int, default=2000)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores split between instances")
    p.add_argument("--json", default="out/benchmarks/triton_load.json")
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 64 and 1 <= args.requests <= 10000 and 0 < args.max_seconds <= 600):
        raise ExportError("--clients 1..64, --requests 1..10000 and --max-seconds up to 600 (bounded load)")

    from serve import server as srv
    from serve import repository
    from benchmarks.common import machine, print_table

    tmp = Path(tempfile.mkdtemp(prefix="lcoan_triton_load_"))
    try:
        if args.repo:
            source = Path(args.repo) / repository.MODEL_NAME
            if not (source / "1" / "model.onnx").is_file():
                raise ExportError(f"{args.repo}: no {repository.MODEL_NAME}/1/model.onnx (write it with python -m export.to_triton)")
        else:
            print("writing a repository from the bundled weights ...", flush=True)
            source = repository.write_repository(tmp / "repo", max_batch=args.max_batch, opt_level=0,
                                             log=lambda _m: None).model_dir
        rows = []
        for label, dynamic, instances in VARIANTS:
            threads = max(1, args.cores // instances)
            folder = variant_repository(source.resolve(), tmp / f"v{len(rows)}", dynamic=dynamic,
                                        instances=instances, threads=threads, max_batch=args.max_batch,
                                        queue_delay_us=args.queue_delay_us)
            with srv.TritonServer(folder, config_name="cpu") as server:
                import tritonclient.grpc as grpcclient
                client = grpcclient.InferenceServerClient(server.grpc_url)
                warm = run_load(server.grpc_url, repository.MODEL_NAME, clients=instances, requests=2 * instances,
                                max_seconds=60, tile=args.tile)   # first calls per instance: ORT's lazy init
                before = client.get_inference_statistics(repository.MODEL_NAME, as_json=True)["model_stats"][0]
                result = run_load(server.grpc_url, repository.MODEL_NAME, clients=args.clients, requests=args.requests,
                                  max_seconds=args.max_seconds, tile=args.tile)
                after = client.get_inference_statistics(repository.MODEL_NAME, as_json=True)["model_stats"][0]
                client.close()
            inferences = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
            executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
            row = {"variant": label, "dynamic_batching": dynamic, "instances": instances, "threads": threads,
                   "clients": args.clients, "tile": args.tile, **result,
                   "mean_batch": round(inferences / executions, 2) if executions else None,
                   "warmup_errors": warm["errors"]}
            rows.append(row)
            print(f"{label}: {result['requests']} requests, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
                  f"{result['throughput_rps']} req/s, mean batch {row['mean_batch']}", flush=True)
        print()
        table = print_table(rows, [("variant", "variant"), ("threads", "ORT threads"), ("requests", "requests"),
                                   ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("throughput_rps", "req/s"),
                                   ("lr_mpix_per_s", "LR Mpix/s"), ("mean_batch", "mean batch"),
                                   ("errors", "errors")])
        payload = {"benchmark": "triton_load", "device": "cpu", "machine": machine(),
                   "config": {k: v for k, v in vars(args).items() if k != "json"}, "rows": rows, "table": table}
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".tmp")
        part.write_text(json.dumps(payload, indent=2) + "\n")
        part.replace(out)
        print(f"wrote {out}")
    except srv.ServeError as exc:
        raise ExportError(str(exc)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
