"""`python -m pipeline.torchrun ARGS`: torchrun for one machine, its stores reachable from this machine only.

`torchrun --standalone` starts a rendezvous store and a store it shares with the workers
(c10d TCPStores, on free ports). torch's TCPStore server listens on every interface
whatever host name it is given (torch 2.13: `TCPStore("127.0.0.1", 0, is_master=True)`
binds `::`), and no torchrun option changes that (`--rdzv-endpoint 127.0.0.1:0` and
`--local-addr` only change what clients dial). So while a job runs, anyone who can reach
the machine could talk to its store. TCPStore does take a socket that is already
listening (`master_listen_fd`): this module runs torchrun with every TCPStore server it
makes handed a socket bound to 127.0.0.1. The workers are clients of the shared store
(torchrun's agent store), MASTER_ADDR is 127.0.0.1 (`--local-addr`), and gloo / NCCL are
pointed at the loopback interface (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME, unless the
environment sets them). `pipeline.cli` launches FCA_NPROC > 1 runs through `command()`.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta

LOOPBACK = "127.0.0.1"


def loopback_interface() -> str | None:
    """The name of the loopback network interface ('lo' on Linux), or None if there is none to name."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    for name in names:
        if name == "lo" or name.startswith("lo"):
            return name
    return None


def command(nproc: int, target: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command line that runs `target` (e.g. ["-m", "pipeline.cli", "train-fdc", ...]) as `nproc`
    processes on this machine, with the rendezvous on 127.0.0.1 only.

    The flags are --standalone's (a c10d rendezvous on a free port, a fresh run id, one node),
    spelled out with the loopback address in place of `localhost`/the host name."""
    return [
        python, "-m", "pipeline.torchrun",
        "--nnodes", "1", "--nproc-per-node", str(nproc),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{LOOPBACK}:0", "--rdzv-id", str(uuid.uuid4()),
        "--local-addr", LOOPBACK,
        *target,
    ]


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment: the workers' collective backends on the loopback interface (unless set)."""
    env = dict(os.environ if base is None else base)
    lo = loopback_interface()
    if lo is not None:
        env.setdefault("GLOO_SOCKET_IFNAME", lo)
        env.setdefault("NCCL_SOCKET_IFNAME", lo)
    return env


def _patch_stores() -> None:
    """Make every TCPStore server this process creates listen on 127.0.0.1 only."""
    import torch.distributed as dist
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend

    base = dist.TCPStore

    class LoopbackTCPStore(base):  # type: ignore[misc, valid-type]
        def __init__(
            self, host_name: str, port: int, world_size: int | None = None, is_master: bool = False,
            timeout: timedelta = timedelta(seconds=300), wait_for_workers: bool = True, multi_tenant: bool = False,
            master_listen_fd: int | None = None, use_libuv: bool = True,
        ) -> None:
            if is_master and master_listen_fd is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.bind((LOOPBACK, port))
                    sock.listen(512)
                except OSError:
                    sock.close()
                    raise
                port = sock.getsockname()[1]
                master_listen_fd = sock.detach()  # the store owns it from here
            super().__init__(host_name, port, world_size, is_master, timeout, wait_for_workers, multi_tenant, master_listen_fd, use_libuv)

    dist.TCPStore = LoopbackTCPStore
    c10d_rendezvous_backend.TCPStore = LoopbackTCPStore


def main(argv: Sequence[str] | None = None) -> None:
    """torchrun's own entry point, with the stores patched; argv as torchrun takes it."""
    os.environ.update(environment())
    _patch_stores()
    from torch.distributed.run import main as torchrun_main

    torchrun_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
