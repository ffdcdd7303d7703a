#!/usr/bin/env python3
"""Check that a running ComfyUI stops a VC2 workflow promptly on Cancel (POST /interrupt).

    python tools/comfy_interrupt_check.py --url http://127.0.0.1:8188 --workflow workflows/api/vc2_text_to_video.json
        [--node-type VC2_Sampler] [--after-steps 2] [--timeout 600]

Queues the workflow, waits until the node of --node-type has reported --after-steps progress steps,
presses Cancel, and measures how long the server takes to report ``execution_interrupted``. Exit
status 0 when it stopped in that node within 30 s and the prompt wrote no output. Runs with
ComfyUI's Python (it needs aiohttp, a ComfyUI requirement).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
import uuid


def post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode()
    return json.loads(body) if body.strip() else {}


async def check(url: str, workflow: dict, node_type: str, after_steps: int, timeout: float) -> int:
    import aiohttp

    nodes = [node_id for node_id, node in workflow.items() if node["class_type"] == node_type]
    if not nodes:
        print(f"the workflow has no {node_type} node")
        return 2
    client_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url.replace("http://", "ws://") + f"/ws?clientId={client_id}") as ws:
            prompt_id = post(url + "/prompt", {"prompt": workflow, "client_id": client_id})["prompt_id"]
            print(f"queued {prompt_id}; waiting for {after_steps} steps of {node_type} (node {nodes[0]})")
            started, pressed = time.time(), None
            async for message in ws:
                if time.time() - started > timeout:
                    print("timed out")
                    return 1
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(message.data)
                kind, data = event.get("type"), event.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                ours = kind == "progress" and data.get("node") in nodes
                if ours and pressed is None and data["value"] >= after_steps:
                    waited = time.time() - started
                    print(f"{node_type} at step {data['value']}/{data['max']} after {waited:.1f} s: Cancel")
                    post(url + "/interrupt", {})
                    pressed = time.time()
                elif kind == "progress" and pressed is not None:
                    print(f"  progress after Cancel: {data['value']}/{data['max']}")
                elif kind == "execution_interrupted":
                    delay = time.time() - pressed if pressed else float("nan")
                    print(f"execution_interrupted in node {data.get('node_id')} ({data.get('node_type')}), "
                          f"{delay:.2f} s after Cancel")
                    outputs = [k for k, v in (post_history(url, prompt_id).get("outputs") or {}).items() if v]
                    print(f"outputs written: {outputs or 'none'}")
                    return 0 if data.get("node_id") in nodes and delay < 30 and not outputs else 1
                elif kind == "execution_success" and data.get("prompt_id") == prompt_id:
                    print("the prompt finished before Cancel took effect")
                    return 1
    return 1


def post_history(url: str, prompt_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/history/{prompt_id}", timeout=30) as response:
        return json.loads(response.read().decode()).get(prompt_id, {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--workflow", required=True, help="an API-format workflow")
    parser.add_argument("--node-type", default="VC2_Sampler")
    parser.add_argument("--after-steps", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with open(args.workflow) as handle:
        workflow = json.load(handle)
    return asyncio.run(check(args.url, workflow, args.node_type, args.after_steps, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
