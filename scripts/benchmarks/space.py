"""Section "space": the Space as its users meet it, on this CPU.

Starts ``python spaces/artlens/app.py`` (the embedded default models when built, otherwise untrained
tf_efficientnet_lite0 folders with the same label sets and the same compute), then measures through
gradio_client: start-up time, per-endpoint latency, and a load test of 8 concurrent clients x 25
requests on /classify (every request must be answered).

    python scripts/benchmark.py --only space [--quick]
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.space_helpers import ROOT, make_space_models, start_space, stop_space  # scripts/ is on sys.path

CLIENTS, REQUESTS = 8, 25


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def load_test(url: str, files: list[str], clients: int, requests: int) -> dict:
    """``clients`` threads, each with its own gradio_client, sending ``requests`` /classify calls."""
    from gradio_client import Client, handle_file

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    conns = [Client(url, verbose=False) for _ in range(clients)]
    start = threading.Barrier(clients)

    def worker(i: int):
        start.wait()
        for j in range(requests):
            f = files[(i * requests + j) % len(files)]
            msg = "empty answer"
            t0 = time.perf_counter()
            try:
                style, _, _ = conns[i].predict(handle_file(f), api_name="/classify")
                ok = bool(style and style.get("label"))
            except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                ok, msg = False, f"{type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    errors.append(msg)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"answered": len(lat), "sent": clients * requests, "errors": errors, "wall": wall, "lat": lat}


def run(args) -> str:
    from gradio_client import Client, handle_file

    data = Path(getattr(args, "data", ROOT.parent / "shared" / "data"))
    quick = bool(getattr(args, "quick", False))
    files = [str(p) for s in sorted((data / "paintings_styles10").iterdir()) if s.is_dir()
             for p in sorted(s.glob("*.jpg"))[:3]]
    defaults = all((ROOT / "artlens" / "defaults" / t / "config.json").exists() for t in ("style", "artist", "origin"))
    reps = {"classify": 3, "detect": 3, "gradcam": 2, "rollout": 2, "lime": 1} if quick else \
        {"classify": 10, "detect": 10, "gradcam": 5, "rollout": 5, "lime": 3}
    clients, requests = (CLIENTS, 3) if quick else (CLIENTS, REQUESTS)
    with tempfile.TemporaryDirectory() as tmp:
        models = None if defaults else make_space_models(Path(tmp) / "models", data)
        proc, url, startup = start_space(models, log_path=Path(tmp) / "space.log")
        try:
            client = Client(url, verbose=False)
            client.predict(handle_file(files[0]), api_name="/classify")  # first call: lazy inits, not a user's wait
            calls = {
                "classify": lambda f: client.predict(handle_file(f), api_name="/classify"),
                "detect": lambda f: client.predict(handle_file(f), api_name="/detect"),
                "gradcam": lambda f: client.predict(handle_file(f), "style", "gradcam", "(top prediction)",
                                                    api_name="/explain"),
                "rollout": lambda f: client.predict(handle_file(f), "style", "rollout", "(top prediction)",
                                                    api_name="/explain"),
                "lime": lambda f: client.predict(handle_file(f), "style", "lime", "(top prediction)",
                                                 api_name="/explain"),
            }
            per = {name: [_timed(lambda f=files[i % len(files)]: fn(f)) for i in range(reps[name])]
                   for name, fn in calls.items()}
            load = load_test(url, files, clients, requests)
        finally:
            stop_space(proc)
    what = "embedded default models" if defaults else "untrained tf_efficientnet_lite0 folders (defaults not built)"
    lines = [f"The Space served by `python spaces/artlens/app.py` on {what}; requests through gradio_client "
             f"from the same machine (CPU only, 256 px paintings from paintings_styles10).", "",
             "| measurement | value |", "|---|---|",
             f"| start-up (process start to first page, imports and model loading included) | {startup:.1f} s |", ""]
    lines += ["| endpoint (one client) | requests | p50 latency | p95 latency |", "|---|---|---|---|"]
    names = {"classify": "/classify (style + artist)", "detect": "/detect (human or AI)",
             "gradcam": "/explain Grad-CAM", "rollout": "/explain attention rollout",
             "lime": "/explain LIME (40 + 12 samples)"}
    for name, lat in per.items():
        lines.append(f"| {names[name]} | {len(lat)} | {statistics.median(lat):.2f} s | {_pct(lat, 95):.2f} s |")
    lat = load["lat"] or [float("nan")]
    lines += ["", f"| load test: {clients} concurrent clients x {requests} requests on /classify | value |", "|---|---|",
              f"| answered | {load['answered']} / {load['sent']} |",
              f"| p50 latency | {statistics.median(lat):.2f} s |",
              f"| p95 latency | {_pct(lat, 95):.2f} s |",
              f"| throughput | {load['answered'] / load['wall']:.1f} requests/s ({load['wall']:.0f} s wall) |"]
    if load["errors"]:
        lines.append(f"| errors | {len(load['errors'])}: {load['errors'][0][:120]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Space benchmark (prints the table; scripts/benchmark.py writes it)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--quick", action="store_true")
    print(run(p.parse_args()))
