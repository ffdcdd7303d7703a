"""The limits of the temporal attention kernel, importable without Triton.

The attention registry builds the ``triton`` backend's checks from these (so a call it does not cover goes to
SDPA before anything imports Triton); :mod:`.temporal_attention` refuses such calls with the same checks.
"""

import torch

MAX_SEQ = 64  # longest sequence a program holds whole (scores SEQ x SEQ in registers)
MAX_HEAD_DIM = 128  # head dims are padded to a power of two >= 16 (tl.dot's smallest side) in registers
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
