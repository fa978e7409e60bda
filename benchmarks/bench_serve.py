"""Load test of `fexgan serve`'s HTTP API on loopback: N concurrent clients for a bounded time.

Starts the real server (one process, --workers W), then for each client count runs N clients that
each send requests back to back (a user dragging a slider without pause) for --seconds, and prints
a Markdown table: answered requests/s, p50/p95/max latency of the answered ones, errors (refused with 503 = the bounded queue at
work, anything else = a bug), the server's CPU time per answered request (what it costs, however
busy the machine is) and its resident memory before, after and at its peak.

Reproduce: .venv/bin/python benchmarks/bench_serve.py MODEL [--clients 1,4,16,32,64] [--seconds 10]
           [--workers 1] [--endpoint mix|transfer]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fexgan.data import toon

FEXGAN = Path(sys.executable).parent / "fexgan"


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MB, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(model: str, workers: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(FEXGAN), "serve", model, "--port", str(port), "--workers", str(workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"fexgan serve exited with {proc.returncode}")
        try:
            httpx.get(f"{url}/api/info", timeout=2)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("fexgan serve did not start")


def request_for(endpoint: str, face: bytes, i: int) -> tuple[str, dict, dict]:
    """(path, form fields, files) of request i: a slider position (mix) or the strip of all expressions."""
    files = {"image": ("face.png", face, "image/png")}
    if endpoint == "mix":
        w = (i % 21) / 20
        return "/api/mix", {"affect": f"joy={w},surprise={1 - w}", "source": "neutral"}, files
    return "/api/transfer", {"to": "all", "source": "neutral"}, files


async def load(url: str, endpoint: str, face: bytes, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        i = c
        while time.perf_counter() < deadline:
            path, data, files = request_for(endpoint, face, i)
            t = time.perf_counter()
            try:
                status = (await http.post(path, data=data, files=files)).status_code
            except httpx.HTTPError:
                status = 0
            if status == 200:
                latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        elapsed = time.perf_counter() - start
    ok = sorted(latencies) or [float("nan")]
    return {"ok": statuses.get(200, 0), "refused": statuses.get(503, 0),
            "errors": sum(n for s, n in statuses.items() if s not in (200, 503)), "rps": statuses.get(200, 0) / elapsed,
            "p50": ok[len(ok) // 2] * 1000, "p95": ok[int(len(ok) * 0.95)] * 1000, "max": ok[-1] * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder, model file or shipped model name")
    parser.add_argument("--clients", default="1,4,16,32,64", help="comma-separated concurrent client counts")
    parser.add_argument("--seconds", type=float, default=10, help="duration of each client count")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--endpoint", choices=("mix", "transfer"), default="mix")
    args = parser.parse_args()

    buffer = io.BytesIO()
    toon.render_face(toon.make_characters(5)[4], "neutral", size=128).save(buffer, format="PNG")
    face = buffer.getvalue()
    proc, url = start_server(args.model, args.workers)
    try:
        for _ in range(5):  # warm up
            path, data, files = request_for(args.endpoint, face, 0)
            httpx.post(url + path, data=data, files=files, timeout=60).raise_for_status()
        print(f"`{args.endpoint}` on {os.cpu_count()} CPUs ({platform.machine()}), server --workers {args.workers}, "
              f"load average before {os.getloadavg()[0]:.1f}, {args.seconds:g} s per row\n")
        print("| clients | requests/s | p50 ms | p95 ms | max ms | ok | refused (503) | errors "
              "| server CPU ms/request | RSS MB before → after (peak) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for n in (int(c) for c in args.clients.split(",")):
            before, _ = rss_mb(proc.pid)
            cpu = cpu_seconds(proc.pid)
            r = asyncio.run(load(url, args.endpoint, face, n, args.seconds))
            cpu = (cpu_seconds(proc.pid) - cpu) / max(r["ok"], 1) * 1000
            after, peak = rss_mb(proc.pid)
            print(f"| {n} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['max']:.0f} | {r['ok']} | "
                  f"{r['refused']} | {r['errors']} | {cpu:.1f} | {before:.0f} → {after:.0f} ({peak:.0f}) |", flush=True)
        print(f"\nload average after {os.getloadavg()[0]:.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    print(f"reproduce: .venv/bin/python benchmarks/bench_serve.py {args.model} --clients {args.clients} "
          f"--seconds {args.seconds:g} --workers {args.workers} --endpoint {args.endpoint}")


if __name__ == "__main__":
    main()
