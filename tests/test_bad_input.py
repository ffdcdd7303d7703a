"""Bad input, tried systematically: every `vc2` command, each case in a table (the nodes' table is
tests/test_bad_node_input.py; both try the files of tests/bad_files.py).

A case runs ``main(argv)`` in-process and must end with a non-zero status, one line naming the problem
(``vc2 CMD: error: ...``, or argparse's ``error: argument ...`` after its usage line), no traceback, and
nothing written. docs/cli.md's reliability table counts the cases of each group (checked in
tests/test_bad_node_input.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bad_files import AS_ROOT, make_bad_files, tree
from tiny_media import CONFIGS

from vc2_core.commands.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("inputs"))


# ---- the CLI ------------------------------------------------------------------------------------------------
# (case id, argv with {name} for the files above and {out} for an empty output folder, the message expected)

SAMPLE = ["sample", "--ckpt", "{ckpt}", "--prompt", "a red ball", "--out", "{out}/v.mp4", "--steps", "2",
          "--frames", "2", "--height", "16", "--width", "16"]
TRAIN = ["train", "--config", str(CONFIGS / "tiny_stage2.yaml"), "--no-progress", "--set", "model.checkpoint={ckpt}",
         "--set", "images.index={images}", "--set", "run.output_dir={out}/run", "--set", "images.batch_size=1",
         "--set", "images.height=16", "--set", "images.width=16", "--set", "run.max_steps=3",
         "--set", "checkpoint.every=10"]
MERGE = ["lora", "merge", "--ckpt", "{ckpt}", "--lora", "{lora}", "--out", "{out}/merged.safetensors"]
INIT = ["init", "--preset", "tiny", "--out", "{out}/m.safetensors"]

CHECKPOINT_FILES = [  # (file, message) for every command that reads a checkpoint
    ("missing", "no such checkpoint file"),
    ("folder", "is a folder, not a checkpoint file"),
    ("empty", "neither a safetensors file nor a PyTorch checkpoint"),
    ("junk", "neither a safetensors file nor a PyTorch checkpoint"),
    ("trunc", "truncated or corrupt safetensors file"),
    ("trunc_ckpt", "truncated or corrupt checkpoint"),
    ("foreign", "not a VideoCrafter checkpoint"),
]

CLI_CASES = {
    "inspect": [
        *[(f"checkpoint-{name}", ["inspect", f"{{{name}}}"], message) for name, message in CHECKPOINT_FILES],
        ("nothing", ["inspect"], "give a checkpoint file, or --preset NAME"),
        ("both", ["inspect", "{ckpt}", "--preset", "tiny"], "not both"),
        ("manifest-without-preset", ["inspect", "{ckpt}", "--manifest", "{out}/m.json"], "written for a --preset"),
        ("manifest-suffix", ["inspect", "--preset", "tiny", "--manifest", "{out}/m.txt"],
         "--manifest must end in .json"),
        ("manifest-no-folder", ["inspect", "--preset", "tiny", "--manifest", "{out}/no/m.json"], "does not exist"),
        ("manifest-is-folder", ["inspect", "--preset", "tiny", "--manifest", "{out}/sub.json"], "is a folder"),
        ("manifest-under-file", ["inspect", "--preset", "tiny", "--manifest", "{file}/m.json"], "is not a folder"),
        ("manifest-readonly", ["inspect", "--preset", "tiny", "--manifest", "{readonly}/m.json"], "not writable"),
        ("unknown-preset", ["inspect", "--preset", "vc3"], "argument --preset: invalid choice"),
    ],
    "init": [
        ("suffix", [*INIT[:4], "{out}/m.bin"], "must end in .safetensors"),
        ("no-folder", [*INIT[:4], "{out}/no/m.safetensors"], "does not exist"),
        ("out-is-folder", [*INIT[:4], "{out}/sub.safetensors"], "is a folder"),
        ("out-under-file", [*INIT[:4], "{file}/m.safetensors"], "is not a folder"),
        ("readonly", [*INIT[:4], "{readonly}/m.safetensors"], "not writable"),
        ("seed-too-large", [*INIT, "--seed", str(2**64)], "argument --seed: must be in [0, 2**64 - 1]"),
        ("seed-negative", [*INIT, "--seed", "-1"], "argument --seed: must be in [0, 2**64 - 1]"),
        ("seed-not-a-number", [*INIT, "--seed", "1.5"], "argument --seed: expected a whole number"),
        ("unknown-preset", ["init", "--preset", "vc3", "--out", "{out}/m.safetensors"], "invalid choice: 'vc3'"),
    ],
    "sample": [
        *[(f"checkpoint-{name}", [*SAMPLE[:2], f"{{{name}}}", *SAMPLE[3:]], message)
          for name, message in CHECKPOINT_FILES],
        ("frames-0", [*SAMPLE, "--frames", "0"], "argument --frames: must be at least 1, got 0"),
        ("frames-negative", [*SAMPLE, "--frames", "-3"], "argument --frames: must be at least 1, got -3"),
        ("frames-text", [*SAMPLE, "--frames", "many"], "argument --frames: expected a whole number"),
        ("height-not-multiple", [*SAMPLE, "--height", "30"], "height 30: must be a positive multiple of 4"),
        ("width-0", [*SAMPLE, "--width", "0"], "argument --width: must be at least 1, got 0"),
        ("steps-0", [*SAMPLE, "--steps", "0"], "argument --steps: must be at least 1, got 0"),
        ("steps-too-many", [*SAMPLE, "--steps", "1001"], "exceed the 1000 training timesteps"),
        ("cfg-negative", [*SAMPLE, "--cfg", "-2"], "argument --cfg: must be >= 0, got -2"),
        ("cfg-nan", [*SAMPLE, "--cfg", "nan"], "argument --cfg: must be >= 0, got nan"),
        ("cfg-inf", [*SAMPLE, "--cfg", "inf"], "argument --cfg: must be finite, got inf"),
        ("eta-inf", [*SAMPLE, "--eta", "inf"], "argument --eta: must be finite, got inf"),
        ("rescale-above-1", [*SAMPLE, "--guidance-rescale", "5"], "guidance rescale 5.0: must be in [0, 1]"),
        ("deterministic-eta", [*SAMPLE, "--sampler", "dpmpp_2m", "--eta", "1"], "dpmpp_2m is deterministic"),
        ("fps-0", [*SAMPLE, "--fps", "0"], "argument --fps: must be at least 1, got 0"),
        ("seed-too-large", [*SAMPLE, "--seed", str(2**64)], "argument --seed: must be in [0, 2**64 - 1]"),
        ("seed-negative", [*SAMPLE, "--seed", "-1"], "argument --seed: must be in [0, 2**64 - 1]"),
        ("seeds-run-past-the-range", [*SAMPLE, "--prompt", "two", "--seed", str(2**64 - 1)],
         "--seed 18446744073709551615: 2 prompts need seeds up to 18446744073709551616, over 2**64 - 1"),
        ("context-overlap", [*SAMPLE, "--frames", "8", "--context-frames", "4", "--context-overlap", "4"],
         "context overlap must be in [0, 3]"),
        ("batch-size-0", [*SAMPLE, "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        ("device-unknown", [*SAMPLE, "--device", "tpu9"], "--device 'tpu9': not a device"),
        ("sampler-unknown", [*SAMPLE, "--sampler", "plms"], "argument --sampler: invalid choice: 'plms'"),
        ("attention-xformers-on-cpu", [*SAMPLE, "--attention", "xformers"],
         "attention backend 'xformers' cannot run here: CUDA tensors only"),
        ("turbo-lora-missing", [*SAMPLE, "--lora", "{missing}"], "no such T2V-Turbo weight file"),
        ("turbo-lora-safetensors", [*SAMPLE, "--lora", "{junk}"], "a safetensors file; T2V-Turbo's files are"),
        ("turbo-lora-a-vc2-lora", [*SAMPLE, "--lora", "{lora}"], "a safetensors file; T2V-Turbo's files are"),
        ("turbo-lora-truncated", [*SAMPLE, "--lora", "{trunc_ckpt}"], "not a torch file, or a truncated one"),
        ("turbo-lora-strength", [*SAMPLE, "--lora", "{trunc_ckpt}", "--lora-strength", "-1"],
         "argument --lora-strength: must be >= 0, got -1"),
        ("turbo-sampler-without-lora", [*SAMPLE, "--sampler", "t2v-turbo"], "this model has none (give their"),
        ("empty-prompt", [*SAMPLE[:3], "--prompt", "  ", *SAMPLE[5:]], "--prompt: an empty prompt"),
        ("prompts-missing", [*SAMPLE[:3], "--prompts", "{missing}", *SAMPLE[5:]], "no such file"),
        ("prompts-folder", [*SAMPLE[:3], "--prompts", "{folder}", *SAMPLE[5:]], "no such file"),
        ("prompts-empty", [*SAMPLE[:3], "--prompts", "{prompts_empty}", *SAMPLE[5:]], "no prompts (one per line)"),
        ("prompts-binary", [*SAMPLE[:3], "--prompts", "{prompts_binary}", *SAMPLE[5:]], "not UTF-8 text"),
        ("out-suffix", [*SAMPLE[:6], "{out}/v.avi", *SAMPLE[7:]], "unsupported video format"),
        ("out-no-folder", [*SAMPLE[:6], "{out}/no/v.mp4", *SAMPLE[7:]], "does not exist"),
        ("out-is-folder", [*SAMPLE[:6], "{out}/sub.mp4", *SAMPLE[7:]], "is a folder"),
        ("out-under-file", [*SAMPLE[:6], "{file}/v.mp4", *SAMPLE[7:]], "does not exist"),
        ("out-readonly", [*SAMPLE[:6], "{readonly}/v.mp4", *SAMPLE[7:]], "not writable"),
    ],
    "train": [
        ("config-missing", ["train", "--config", "{missing}"], "no such config file"),
        ("config-folder", ["train", "--config", "{folder}"], "no such config file"),
        ("config-empty", ["train", "--config", "{empty_yaml}"], "model: give exactly one of checkpoint"),
        ("config-corrupt", ["train", "--config", "{bad_yaml}"], "not valid YAML"),
        ("config-not-text", ["train", "--config", "{binary_yaml}"], "binary.yaml: not UTF-8 text"),
        ("config-a-list", ["train", "--config", "{list_yaml}"], "the top level must be a mapping of sections"),
        ("config-unknown-section", ["train", "--config", "{unknown_yaml}"], "unknown section 'optimizer'"),
        ("config-suffix", ["train", "--config", "{trunc_ckpt}"], "a training config is .yaml, .yml or .toml"),
        ("set-malformed", [*TRAIN, "--set", "lr=1"], "expected SECTION.FIELD=VALUE"),
        ("set-unknown-field", [*TRAIN, "--set", "optim.learning_rate=1"], "optim: unknown field 'learning_rate'"),
        ("lr-nan", [*TRAIN, "--set", "optim.lr=.nan"], "optim.lr must be positive"),
        ("lr-negative", [*TRAIN, "--set", "optim.lr=-1"], "optim.lr must be positive"),
        ("steps-0", [*TRAIN, "--set", "run.max_steps=0"], "run.max_steps"),
        ("size-not-multiple", [*TRAIN, "--set", "images.height=30"], "images: height 30: must be a positive multiple"),
        *[(f"checkpoint-{name}", [*TRAIN, "--set", f"model.checkpoint={{{name}}}"], message)
          for name, message in CHECKPOINT_FILES],
        ("images-missing", [*TRAIN, "--set", "images.index={missing}"], "missing.safetensors"),
        ("images-empty-folder", [*TRAIN, "--set", "images.index={empty_folder}"], "empty_folder"),
        ("images-all-broken", [*TRAIN, "--set", "images.index={broken_images}"], "the dataset has no usable items"),
        ("index-empty-csv", [*TRAIN, "--set", "images.index={empty_csv}"], "empty_csv.csv"),
        ("index-header-only", [*TRAIN, "--set", "images.index={header_csv}"], "header_csv.csv"),
        ("index-corrupt-csv", [*TRAIN, "--set", "images.index={bad_csv}"], "bad_csv.csv"),
        ("output-is-file", [*TRAIN, "--set", "run.output_dir={file}"], "plain.txt"),
        ("resume-missing", [*TRAIN, "--resume", "{missing}"], "missing.safetensors"),
        ("cache-unset", ["cache", *TRAIN[1:]], "set data.cache"),
    ],
    "lora": [
        ("lora-missing", [*MERGE[:5], "{missing}", *MERGE[6:]], "no such LoRA file"),
        ("lora-folder", [*MERGE[:5], "{folder}", *MERGE[6:]], "no such LoRA file"),
        ("lora-truncated", [*MERGE[:5], "{lora_trunc}", *MERGE[6:]], "not a safetensors file, or a truncated one"),
        ("lora-junk", [*MERGE[:5], "{junk}", *MERGE[6:]], "not a safetensors file, or a truncated one"),
        ("lora-a-checkpoint", [*MERGE[:5], "{ckpt}", *MERGE[6:]], "is a vc2 model checkpoint, not a LoRA file"),
        ("lora-other-family", [*MERGE[:5], "{lora_vc2}", *MERGE[6:]], "trained on a vc2-512 model, but"),
        *[(f"checkpoint-{name}", [*MERGE[:3], f"{{{name}}}", *MERGE[4:]], message)
          for name, message in CHECKPOINT_FILES],
        ("out-is-the-checkpoint", [*MERGE[:7], "{ckpt}"], "is the --ckpt file"),
        ("out-suffix", [*MERGE[:7], "{out}/m.ckpt"], "must end in .safetensors"),
        ("out-is-folder", [*MERGE[:7], "{out}/sub.safetensors"], "is a folder"),
        ("out-readonly", [*MERGE[:7], "{readonly}/m.safetensors"], "not writable"),
        ("scale-nan", [*MERGE, "--scale", "nan"], "argument --scale: must be finite, got nan"),
    ],
    "demo": [
        ("base-missing", ["demo", "--preset", "tiny", "--base", "{missing}", "--out", "{out}/demo"],
         "no such checkpoint file"),
        ("base-truncated", ["demo", "--preset", "tiny", "--base", "{trunc}", "--out", "{out}/demo"],
         "truncated or corrupt safetensors file"),
        ("base-foreign", ["demo", "--preset", "tiny", "--base", "{foreign}", "--out", "{out}/demo"],
         "not a VideoCrafter checkpoint"),
        ("base-other-family", ["demo", "--preset", "tiny", "--base", "{ckpt}", "--out", "{out}/demo"],
         "is a tiny model; the demo's base is a tiny-world model"),
        ("base-and-scratch", ["demo", "--preset", "tiny", "--base", "{ckpt}", "--from-scratch", "--out", "{out}/d"],
         "not both"),
        ("out-is-file", ["demo", "--preset", "tiny", "--out", "{file}"], "is a file"),
        ("seed-negative", ["demo", "--preset", "tiny", "--seed", "-1", "--out", "{out}/demo"],
         "argument --seed: must be in [0, 2**64 - 1]"),
        ("unknown-preset", ["demo", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
    ],
    "study": [
        ("one-seed", ["study", "coupling", "--preset", "tiny", "--seeds", "1", "--out", "{out}/s"],
         "at least two distinct seeds"),
        ("same-seeds", ["study", "coupling", "--preset", "tiny", "--seeds", "1", "1", "--out", "{out}/s"],
         "at least two distinct seeds"),
        ("out-is-file", ["study", "coupling", "--preset", "tiny", "--out", "{file}"], "is a file"),
        ("seed-negative", ["study", "coupling", "--preset", "tiny", "--seeds", "0", "-1", "--out", "{out}/s"],
         "argument --seeds: must be in [0, 2**64 - 1]"),
        ("no-study", ["study"], "the following arguments are required: STUDY"),
    ],
}


def _format(argv: list[str], files: dict[str, Path], out: Path) -> list[str]:
    names = {name: str(path) for name, path in files.items()} | {"out": str(out)}
    return [re.sub(r"\{(\w+)\}", lambda m: names[m.group(1)], arg) for arg in argv]


def _check_refused(argv: list[str], message: str, out: Path, capsys) -> None:
    """``vc2 argv`` ends non-zero with ``message`` on one line, without a traceback, writing nothing in ``out``."""
    before = tree(out)
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse: usage line, then one error line, status 2
        status = exit_.code
    captured = capsys.readouterr()
    assert status not in (0, None), captured
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line or ": stopped: " in line]
    assert len(errors) == 1 and message in errors[0], captured.err
    assert lines[-1] == errors[0], captured.err  # nothing after it: the message is one line
    assert tree(out) == before, "the refused command left files"


CLI_IDS = [(group, case) for group, cases in CLI_CASES.items() for case in cases]


@pytest.mark.parametrize("group, case", CLI_IDS, ids=[f"{group}-{case[0]}" for group, case in CLI_IDS])
def test_cli_refuses_bad_input(files, tmp_path, capsys, group, case):
    name, argv, message = case
    if "readonly" in name and AS_ROOT:
        pytest.skip("running as root, which can write into read-only folders")
    out = tmp_path / "out"
    out.mkdir()
    for folder in ("sub.json", "sub.safetensors", "sub.mp4"):  # outputs that are folders
        (out / folder).mkdir()
    _check_refused(_format(argv, files, out), message, out, capsys)


def test_a_learning_rate_that_makes_the_loss_nan_stops_training_before_saving_the_bad_step(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    argv = _format([*TRAIN, "--set", "optim.lr=1e30", "--set", "checkpoint.every=1"], files, out)
    try:
        status = main(argv)
    finally:
        err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "stopped" in line]
    assert re.search(r"vc2 train: stopped: the loss is (nan|inf|-inf) at step 2 ", line), line
    assert "the last good checkpoint is" in line and "lowering optim.lr" in line
    run = out / "run"
    # step 1 (finite) was saved whole; the non-finite step 2 wrote nothing, half-written or not
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001"]
    assert not (run / "summary.json").exists()
