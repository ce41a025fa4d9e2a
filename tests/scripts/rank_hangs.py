"""Run by tests/test_distributed.py under torchrun: rank 1 never reaches the meeting point."""

import time

import torch

from rlvr.distributed import Ranks

ranks = Ranks.from_environment(timeout_seconds=3)
ranks.join(torch.device("cpu"))
if ranks.rank == 1:
    time.sleep(60)
ranks.barrier("step 1: rollouts")
