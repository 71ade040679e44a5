"""Under ``torchrun --nproc_per_node=1``: join an NCCL process group of one and sum a CUDA tensor
through bbvi-kit's all-reduce, as data-parallel steps do (scripts/device-check)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from bbvi_kit.distributed import all_reduce_sum


def main() -> int:
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl")
    try:
        values = [torch.arange(4.0, device="cuda"), torch.ones((), device="cuda")]
        all_reduce_sum(values)
        torch.cuda.synchronize()
        ok = values[0].tolist() == [0.0, 1.0, 2.0, 3.0] and values[1].item() == 1.0
        print(f"nccl: world {dist.get_world_size()}, backend {dist.get_backend()}, all-reduce {'ok' if ok else 'WRONG'}")
        return 0 if ok else 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
