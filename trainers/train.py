"""Headless training entry point: the same as ``vc2 train``, as a script for ``accelerate launch``.

    python trainers/train.py --config trainers/configs/tiny_stage1.yaml --set videos.index=clips/
    accelerate launch --config_file trainers/accelerate/ddp.yaml trainers/train.py \
        --config trainers/configs/stage2_spa_dir_vc2_512.yaml --resume auto
"""

import sys

from vc2_core.commands.main import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
