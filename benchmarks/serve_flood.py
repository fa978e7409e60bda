"""Flood test of `fexgan serve`: bursts of N clients at once on each endpoint, every request at that
endpoint's limits, against the real server process with its default limits.

For each endpoint: the time of one lone request; then for each N, N requests sent at the same moment
(answered 200, refused 413/429/503, anything else counted as a failure), the slowest answer, the
server's peak resident memory during the burst (its VmHWM, reset before each burst), and the time of
one lone request right after the burst, against the lone time before. Prints a Markdown table.

Reproduce: .venv/bin/python benchmarks/serve_flood.py [MODEL] [--clients 30,100] [--endpoints ...]
"""
from __future__ import annotations

import argparse
import io
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from bench_serve import start_server  # this folder is on the path when the script runs
from PIL import Image

from fexgan.data import toon


def big_face() -> bytes:
    """A toon face enlarged to 2048 px, as PNG (4 megapixels): a large but allowed upload."""
    buffer = io.BytesIO()
    face = toon.render_face(toon.make_characters(1)[0], "neutral", size=256)
    face.resize((2048, 2048), Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


def requests(face: bytes) -> dict[str, tuple[dict, dict | None]]:
    """Each endpoint's request at the default limits (work <= 32 megapixels)."""
    upload = {"image": ("face.png", face, "image/png")}
    return {
        "transfer": ({"to": "all", "size": 1024, "format": "json"}, upload),
        "mix": ({"affect": "joy=0.5,surprise=0.5", "size": 1024}, upload),
        "sample": ({"expression": "joy", "n": 16, "size": 1024}, None),
        "morph": ({"frames": 24, "size": 1024, "format": "webp"}, upload),
        "classify": ({}, upload),
    }


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def call(url: str, endpoint: str, form: dict, files: dict | None) -> tuple[int, float]:
    t = time.perf_counter()
    try:
        status = httpx.post(f"{url}/api/{endpoint}", data=form, files=files, timeout=900).status_code
    except httpx.HTTPError:
        status = 0  # no answer
    return status, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="toon-any-64")
    parser.add_argument("--clients", default="30,100")
    parser.add_argument("--endpoints", default="transfer,mix,sample,morph,classify")
    args = parser.parse_args()
    proc, url = start_server(args.model, workers=1)
    jobs = requests(big_face())
    print(f"model {args.model}, limits {httpx.get(f'{url}/api/info').json()['limits']}, load {os.getloadavg()}\n")
    print("| endpoint | clients | 200 | refused (413/429/503) | other | slowest answer | peak RSS | lone before | lone after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for endpoint in args.endpoints.split(","):
            form, files = jobs[endpoint]
            for n in map(int, args.clients.split(",")):
                lone = call(url, endpoint, form, files)[1]
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM from here on
                with ThreadPoolExecutor(n) as pool:
                    answers = list(pool.map(lambda _: call(url, endpoint, form, files), range(n)))
                peak = peak_mb(proc.pid)
                after = call(url, endpoint, form, files)
                counts = Counter(status for status, _ in answers)
                refused = sum(counts[s] for s in (413, 429, 503))
                other = n - counts[200] - refused
                alive = proc.poll() is None and after[0] == 200
                print(f"| {endpoint} | {n} | {counts[200]} | {refused} | {other}{'' if alive else ' (server down)'} | "
                      f"{max(t for _, t in answers):.1f} s | {peak:.0f} MB | {lone:.2f} s | {after[1]:.2f} s |",
                      flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
