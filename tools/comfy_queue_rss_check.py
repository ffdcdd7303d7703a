#!/usr/bin/env python3
"""Queue one workflow many times in a running ComfyUI and record the server's resident memory (VmRSS).

    python tools/comfy_queue_rss_check.py --url http://127.0.0.1:8188 --pid SERVER_PID \\
        --workflow workflows/api/vc2_ksampler_text_to_video.json [--prompts 20] [--out rss.json]

Each prompt gets its own seed (so ComfyUI's cache cannot skip it) and, to keep a CPU run short, 4 steps
and 4 frames of 256x256. Waits for each prompt in turn (GET /history), reads /proc/PID/status after it,
and reports the RSS after prompts 1, 10 and 20 (or the last). Exit status 0 when every prompt succeeded
and the RSS after the last prompt is within 10 % of the RSS after prompt 10 (steady, not growing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request


def request(url: str, payload: dict | None = None) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as response:
        body = response.read().decode()
    return json.loads(body) if body.strip() else {}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def small(workflow: dict, seed: int) -> dict:
    """The workflow with its KSampler seeded ``seed``, 4 steps, and a latent of 4 frames at 256x256."""
    prompt = json.loads(json.dumps(workflow))
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"].update(seed=seed, steps=4)
        if node["class_type"] == "VC2_EmptyVideoLatent":
            node["inputs"].update(width=256, height=256, frames=4)
    return prompt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--out")
    args = parser.parse_args()
    workflow = json.load(open(args.workflow))
    rows = []
    for index in range(1, args.prompts + 1):
        started = time.time()
        prompt_id = request(args.url + "/prompt", {"prompt": small(workflow, 1000 + index)})["prompt_id"]
        while True:
            entry = request(f"{args.url}/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                break
            time.sleep(0.5)
        ok = entry["status"].get("status_str") == "success"
        rows.append({"prompt": index, "ok": ok, "seconds": round(time.time() - started, 1),
                     "rss_mib": round(rss_mib(args.pid), 1)})
        print(json.dumps(rows[-1]), flush=True)
        if not ok:
            break
    if args.out:
        with open(args.out, "w") as out:
            json.dump(rows, out, indent=1)
    marks = {row["prompt"]: row["rss_mib"] for row in rows if row["prompt"] in (1, 10, args.prompts)}
    print("RSS (MiB) after prompt " + ", ".join(f"{k}: {v}" for k, v in marks.items()))
    steady = len(rows) == args.prompts and all(row["ok"] for row in rows)
    if steady and args.prompts >= 10:
        steady = rows[-1]["rss_mib"] <= 1.1 * rows[9]["rss_mib"]
    return 0 if steady else 1


if __name__ == "__main__":
    sys.exit(main())
