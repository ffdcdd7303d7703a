#!/usr/bin/env bash
# End-to-end check of the pack in a real, headless ComfyUI (CPU is enough): import, /object_info, every
# API-format workflow of workflows/api run to completion, a screenshot of the KSampler text-to-video workflow in
# the real frontend, ComfyUI's own sampling code and core nodes on the VC2 MODEL (tools/comfy_native_check.py),
# and Cancel during sampling (VC2 Sampler and KSampler). Not part of CI (it needs a ComfyUI install,
# docs/comfyui.md).
#
# usage: COMFYUI_DIR=... COMFY_VENV=... tools/comfy_e2e_vc2.sh [RUN_DIR]
#   SHARED_TOOLS  folder of comfy_e2e.sh and comfy_ui_shot.py (default: ../shared/tools beside the checkout)
#   PORT=8188     loopback port
#   WORKFLOWS_DIR API-format workflows to run (default: workflows/api)
#
# The workflows name the released checkpoint videocrafter2_512.ckpt; this script puts a stand-in of the same
# name in models/videocrafter: the tiny-512 preset (VideoCrafter2-512's levels and size rules at toy width,
# random weights), so the workflows run unchanged with their released settings on a CPU. An existing file of
# that name is left alone unless it is such a stand-in. Training images for the fine-tune workflow are written
# to input/vc2_finetune (synthetic, captioned), and a random T2V-Turbo LoRA that fits the stand-in to
# models/loras/unet_lora.pt for the turbo workflow.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMFY_DIR=${COMFYUI_DIR:?set COMFYUI_DIR to a ComfyUI source tree}
VENV=${COMFY_VENV:?set COMFY_VENV to ComfyUI s virtual environment}
TOOLS=${SHARED_TOOLS:-$REPO/../shared/tools}
WORKFLOWS_DIR=${WORKFLOWS_DIR:-$REPO/workflows/api}
PORT=${PORT:-8188}
RUN_DIR=${1:-$(mktemp -d)}
PY="$VENV/bin/python"
mkdir -p "$RUN_DIR"

CKPT="$COMFY_DIR/models/videocrafter/videocrafter2_512.ckpt"
mkdir -p "$(dirname "$CKPT")"
if [[ -e "$CKPT" && ! -e "$CKPT.vc2-stand-in" ]]; then
  echo "$CKPT exists and is not a stand-in written by this script; move it away first" >&2
  exit 2
fi
PYTHONPATH="$REPO" "$PY" - "$CKPT" "$COMFY_DIR/input/vc2_finetune" <<'PYEOF'
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFilter

from vc2_core.checkpoint import save_checkpoint
from vc2_core.config import preset
from vc2_core.model import VideoCrafter
from vc2_core.random_weights import randomize_zero_initialized

ckpt, images = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
model = VideoCrafter(preset("tiny-512"))
randomize_zero_initialized(model.unet, torch.Generator().manual_seed(1))
save_checkpoint(model, ckpt)
Path(str(ckpt) + ".vc2-stand-in").write_text("tiny-512 random weights written by tools/comfy_e2e_vc2.sh\n")
images.mkdir(parents=True, exist_ok=True)
for i, (colour, shape) in enumerate([("red", "ball"), ("blue", "square"), ("green", "ball"), ("orange", "square")]):
    picture = Image.new("RGB", (640, 400), (235, 230, 220))
    draw = ImageDraw.Draw(picture)
    box = (200 + 30 * i, 110, 420 + 30 * i, 330)
    (draw.ellipse if shape == "ball" else draw.rectangle)(box, fill=colour, outline="black", width=6)
    picture.filter(ImageFilter.DETAIL).save(images / f"{i:02d}.png")
    (images / f"{i:02d}.txt").write_text(f"a sharp photo of a {colour} {shape} on a light background\n")
print(f"stand-in checkpoint {ckpt} ({ckpt.stat().st_size / 2**20:.1f} MiB), 4 captioned images in {images}")

# T2V-Turbo's unet_lora.pt for the turbo workflow: their layout ([up, down] per adapted layer, rank 2), random values
# that fit the stand-in, written unless a file of that name that is not a stand-in is there
from vc2_core.t2v_turbo import turbo_config
from vc2_core.t2v_turbo.lora import lora_targets

turbo = ckpt.parent.parent / "loras" / "unet_lora.pt"
if not turbo.exists() or Path(str(turbo) + ".vc2-stand-in").exists():
    donor = VideoCrafter(preset("tiny-512").replace(unet=turbo_config(preset("tiny-512").unet))).unet
    generator, tensors = torch.Generator().manual_seed(2), []
    for _, module in lora_targets(donor):
        weight = module.weight  # (out, in, kernel...)
        tensors += [0.05 * torch.randn(weight.shape[0], 2, *([1] * (weight.ndim - 2)), generator=generator),
                    torch.randn(2, *weight.shape[1:], generator=generator)]
    turbo.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, turbo)
    Path(str(turbo) + ".vc2-stand-in").write_text("random T2V-Turbo LoRA written by tools/comfy_e2e_vc2.sh\n")
    print(f"stand-in T2V-Turbo LoRA {turbo} ({len(tensors) // 2} layers)")
PYEOF

echo "== workflows (and the screenshot of the KSampler text-to-video workflow)"
COMFYUI_DIR="$COMFY_DIR" COMFY_VENV="$VENV" PORT="$PORT" RUN_DIR="$RUN_DIR/e2e" WF_TIMEOUT=1500 \
  EXTRA_ARGS="--preview-method auto" SCREENSHOT="$RUN_DIR/ksampler_text_to_video.png" \
  SCREENSHOT_WORKFLOW="$REPO/workflows/vc2_ksampler_text_to_video.json" \
  bash "$TOOLS/comfy_e2e.sh" "$REPO" "$WORKFLOWS_DIR"

echo "== ComfyUI's sampling code and core nodes on the VC2 MODEL"
COMFYUI_DIR="$COMFY_DIR" HF_HUB_OFFLINE=1 "$PY" "$REPO/tools/comfy_native_check.py" "$RUN_DIR/native_check.json"

echo "== Cancel during sampling"
LINK="$COMFY_DIR/custom_nodes/$(basename "$REPO")"
[[ -e "$LINK" ]] || { ln -s "$REPO" "$LINK"; trap 'rm -f "$LINK"' EXIT; }
(cd "$COMFY_DIR" && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 exec "$PY" main.py --cpu --listen 127.0.0.1 \
  --port "$PORT" --disable-auto-launch --disable-api-nodes --comfy-api-base http://127.0.0.1:9/ \
  --disable-all-custom-nodes --whitelist-custom-nodes "$(basename "$REPO")" --output-directory "$RUN_DIR/cancel" \
  > "$RUN_DIR/cancel_server.log" 2>&1) &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; if [[ -L "$LINK" ]]; then rm -f "$LINK"; fi' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/system_stats" > /dev/null && break; sleep 1; done
for run in vc2_text_to_video:VC2_Sampler vc2_ksampler_text_to_video:KSampler; do
  "$PY" "$REPO/tools/comfy_interrupt_check.py" --url "http://127.0.0.1:$PORT" \
    --workflow "$REPO/workflows/api/${run%%:*}.json" --node-type "${run##*:}" --after-steps 2
done

echo "== a queue of 20 KSampler prompts: the server's resident memory"
"$PY" "$REPO/tools/comfy_queue_rss_check.py" --url "http://127.0.0.1:$PORT" --pid "$SERVER" \
  --workflow "$REPO/workflows/api/vc2_ksampler_text_to_video.json" --prompts 20 --out "$RUN_DIR/queue_rss.json"
echo "E2E VC2 OK (run folder: $RUN_DIR)"
