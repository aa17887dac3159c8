"""One rank of the DDP test (tests/test_torch_integration.py): a swapped LeNet-style model
trained a few steps under torch.nn.parallel.DistributedDataParallel (gloo) on its half of
each global batch; rank 0 saves the final weights."""
import sys

import torch
import torch.distributed as dist
from torch import nn

import lepton_kernels.torch as lt


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 5 * 5, 10))


def batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]


def main(rank, world, init_file, out):
    torch.set_num_threads(1)
    net = model()
    lt.swap_modules(net)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
        net = nn.parallel.DistributedDataParallel(net)
    opt = lt.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for x, y in batches():
        share = x.shape[0] // world
        xs, ys = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        opt.zero_grad()
        nn.functional.cross_entropy(net(xs), ys).backward()  # DDP averages the ranks' gradients
        opt.step()
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, out)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
