"""Write the CLIP BPE tokenizer files of vc2_core/assets/clip_tokenizer/ from OpenAI's vocabulary.

    pip download --no-deps open_clip_torch==2.22.0 -d /tmp/oc
    unzip -o /tmp/oc/open_clip_torch-2.22.0-py3-none-any.whl open_clip/bpe_simple_vocab_16e6.txt.gz -d /tmp/oc
    python tools/make_clip_tokenizer.py /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

``bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's BPE merge list (MIT licence), the file
open_clip (the official VideoCrafter text encoder) tokenizes with. The vocabulary is built the
way CLIP builds it: the 256 byte symbols, the same with the end-of-word mark ``</w>``, one
token per merge, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49408 tokens.
The output is the vocab.json / merges.txt pair that transformers' CLIPTokenizer loads from a
local directory, with no network.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "vc2_core" / "assets" / "clip_tokenizer"
NUM_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48894 merges


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in byte order of GPT-2/CLIP."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            codes[byte] = byte
        else:
            codes[byte] = 256 + extra
            extra += 1
    ordered = printable + [b for b in range(256) if b not in printable]
    return [chr(codes[b]) for b in ordered]


def main(bpe_path: str) -> None:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408 and len(set(tokens)) == len(tokens)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (OUT / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, **special}, indent=1) + "\n")
    (OUT / "special_tokens_map.json").write_text(json.dumps(special, indent=1) + "\n")
    print(f"wrote {len(tokens)} tokens and {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
