"""The ``vc2`` command: one module per command, assembled by :mod:`vc2_core.commands.main`.

    vc2 inspect CKPT [--json]                       family, parameter counts by group, key problems
    vc2 inspect --preset NAME --manifest OUT.json   every key and shape of a full checkpoint of a preset
    vc2 init --preset NAME --out FILE.safetensors   random weights in the official layout
    vc2 sample --ckpt FILE --prompt TEXT --out V.mp4 text to video (see vc2 sample --help)
    vc2 train --config FILE [--resume auto]          train a stage (see docs/training.md)
    vc2 cache --config FILE                         encode a config's data into a latent cache
    vc2 lora merge --ckpt BASE --lora L --out OUT   fold a trained LoRA into a checkpoint
    vc2 demo [--from-scratch | --base FILE]         the whole recipe on embedded synthetic data
    vc2 study coupling [--preset quick]             the paper's coupling analysis at toy scale

Each module adds its parser with ``add_parser(commands)`` and sets ``run``, a function of the parsed
arguments that returns the exit status. Bad input raises :class:`~vc2_core.commands.usage.UsageError`
(or a library's ValueError, or an OSError of a file), which ``main`` prints on one line without a
traceback, exiting with status 1 (tests/test_bad_input.py tries every command with bad input).
"""
