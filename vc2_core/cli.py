"""``python -m vc2_core.cli``: the ``vc2`` command (:mod:`vc2_core.commands`) as a module, the form that
``accelerate launch -m`` and ``torchrun -m`` take (docs/training.md)."""

from __future__ import annotations

from .commands.main import main

if __name__ == "__main__":
    raise SystemExit(main())
