"""Data-parallel training: N gloo processes on the CPU train what one process trains.

The multi-process tests spawn two processes (torch.multiprocessing, gloo backend) that
each train on their share of the same global batch; rank 0 saves its weights, which
must match a single-process run with the same global batch and seed.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from fca.distributed import Dist, GlobalBatchNorm2d, init, shutdown, sync_batchnorm
from fca.train.fdc import FDCConfig, train_fdc
from fca.train.generator import GeneratorConfig, train_generator
from fca.train.sr import SRConfig, train_sr

CPU = torch.device("cpu")
# Float rounding differs (gradients are averaged over ranks, BatchNorm sums over ranks),
# nothing else: after a handful of Adam steps of lr 1e-3 (each moves a weight by up to
# ~1e-3) the weights agree to this (measured: 6e-8 FDC, 2.2e-5 generator, 1.7e-5 SR).
ATOL = 1e-4

# Precision pinned: the spawned ranks are new interpreters, out of reach of tests/conftest.py's
# CPU-without-AMX fixture, and `auto` would train them in bf16 on an AMX CPU and the single
# process in fp32.
FDC_CFG = FDCConfig(patch_size=16, channels=4, batch_size=4, steps=8, eval_every=100, eval_scales=[2.0],
                    eval_repeats=1, checkpoint_every=100, blur_weight=1.0, cpu_bf16="off")  # fmt: skip
GEN_CFG = GeneratorConfig(scale=4.0, patch_size=64, kernel_size=7, kernel_start_steps=10, channels=4, dense_blocks=1, res_blocks=1,
                          wd_channels=4, loss="both", spectral_bins=8, batch_size=4, steps=6, lr=1e-3,
                          checkpoint_every=100, image_every=100, estimator_bins=(8, 4), estimator_hidden=16,
                          consistency_batch=4, cpu_bf16="off")  # fmt: skip
SR_CFG = SRConfig(blocks=1, channels=4, steps=6, batch_size=4, patch_size=16)


def _patches() -> torch.Tensor:
    return torch.rand(12, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def _flat(module: nn.Module, skip: tuple[str, ...] = ()) -> torch.Tensor:
    state = module.state_dict()
    return torch.cat([t.detach().flatten().double() for k, t in state.items() if t.is_floating_point() and k not in skip])


# Parameters the outputs do not depend on: their gradient is round-off noise, which Adam
# scales up to full-size steps in any two runs. Everything else must agree.
def _fdc_flat(fdc: nn.Module) -> torch.Tensor:
    # The comparator's last bias cancels in C(a, b) = score(a) - score(b).
    return _flat(fdc, skip=(f"body.{len(fdc.body) - 1}.bias",))


def _generator_flat(gen: nn.Module) -> torch.Tensor:
    if gen.estimator.kernel_param == "free":
        # The head's last bias shifts every kernel logit alike: the softmax ignores it.
        return _flat(gen, skip=("estimator.head.2.bias",))
    # Gaussian: the head's third output is the angle, which an isotropic kernel (the start,
    # and near it all along on round data) does not depend on.
    state = gen.state_dict()
    angle_free = {k: (v[:2] if k.startswith("estimator.head.2.") else v) for k, v in state.items()}
    return torch.cat([t.detach().flatten().double() for t in angle_free.values() if t.is_floating_point()])


def _train_all(dist: Dist) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    patches = _patches()
    fdc, _ = train_fdc(FDC_CFG, patches, patches[:4], progress=False, dist=dist)
    gen, _ = train_generator(GEN_CFG, patches, fdc, device=CPU, checkpoint_dir=None, fdc_scale=1.2, progress=False, dist=dist)
    sr = train_sr(SR_CFG, patches[:, :, ::4, ::4].contiguous(), patches, 4, dist=dist)
    return {"fdc": _fdc_flat(fdc), "generator": _generator_flat(gen), "sr": _flat(sr)}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = init(rank, world, CPU)
    try:
        result = _train_all(dist)
        if rank == 0:
            torch.save(result, out)
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_result(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return torch.load(out)


@pytest.fixture(scope="module")
def one_process_result() -> dict[str, torch.Tensor]:
    return _train_all(Dist())


@pytest.mark.parametrize("model", ["fdc", "generator", "sr"])
def test_two_gloo_processes_train_what_one_process_trains(two_process_result, one_process_result, model):
    single, got = one_process_result[model], two_process_result[model]
    assert got.shape == single.shape
    before = _flat_untrained(model)
    assert (single - before).abs().max() > 10 * ATOL  # training moved the weights: the comparison has teeth
    torch.testing.assert_close(got, single, atol=ATOL, rtol=0)


def _flat_untrained(model: str) -> torch.Tensor:
    """The weights a zero-step run would have (the same seed, so the same init)."""
    from dataclasses import replace

    torch.set_num_threads(1)
    patches = _patches()
    if model == "fdc":
        from fca.models.fdc_arch import build_fdc

        torch.manual_seed(FDC_CFG.seed)
        return _fdc_flat(build_fdc(FDC_CFG.channels, FDC_CFG.normalize_input))
    if model == "generator":
        from fca.train.checkpoint import seed_everything
        from fca.train.generator import build_generator

        seed_everything(GEN_CFG.seed)
        return _generator_flat(build_generator(GEN_CFG))
    from fca.models.sr_arch import SRNet

    torch.manual_seed(0)
    return _flat(SRNet(4, SR_CFG.blocks, SR_CFG.channels))


def test_single_process_dist_is_the_identity():
    d = Dist()
    x = torch.arange(12.0).view(6, 2)
    assert not d.enabled and d.is_main
    assert d.shard(x) is x
    torch.testing.assert_close(d.mean(x), x.mean(0))
    assert d.average({"a": 1.5}) == {"a": 1.5}
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert d.parallel(net, CPU) is net


def test_shards_of_the_ranks_partition_the_global_batch():
    x = torch.arange(8)
    parts = [Dist(rank=r, world_size=4).shard(x) for r in range(4)]
    assert sorted(torch.cat(parts).tolist()) == x.tolist()
    assert parts[1].tolist() == [1, 5]  # the positions torch's DistributedSampler gives rank 1


def test_a_global_batch_that_does_not_split_evenly_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"generator.batch_size = 6 is not divisible by the 4 processes"):
        Dist(rank=0, world_size=4).check_batch("generator.batch_size", 6)
    with pytest.raises(ValueError, match="rank 2 of world size 2"):
        Dist(rank=2, world_size=2)


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    synced = sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), CPU)
    synced.load_state_dict(plain.state_dict())
    assert isinstance(synced[1], GlobalBatchNorm2d)
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced[1].running_var, plain[1].running_var)


def test_sync_batchnorm_keeps_the_parameters_an_optimiser_holds():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    weight = net[1].weight
    sync_batchnorm(net, CPU)
    assert isinstance(net[1], GlobalBatchNorm2d) and net[1].weight is weight
    net(torch.randn(2, 3, 6, 6)).sum().backward()
    opt.step()
    assert not torch.equal(net[1].weight.detach(), torch.ones(4))
