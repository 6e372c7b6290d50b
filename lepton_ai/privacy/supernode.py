"""A client of a secure-aggregation federation: Flower's SuperNode, with its waits cut and its tasks run
warm.

Left as it comes, Flower's engine spends most of a SecAgg+ round waiting, not computing: a SuperNode asks
the SuperLink for work every 3 s and starts a fresh Python process (importing Flower, PyTorch and the app,
≈ 2.5 s) for each of the four messages a client gets per round, and the server's grid also polls every
3 s (docs/design/secure-aggregation.md). Here the SuperNode runs as Flower's own `flower-supernode`
(`python -m lepton_ai.privacy.supernode ARGS`) with those fixed waits cut to `POLL_S`, in Flower's
`process` isolation, and `run_tasks` takes its ClientApp tasks from its runtime API and runs each in a
fork of a process that has imported everything once, through Flower's own `run_clientapp`.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# how often a SuperNode or the server's grid asks for news (Flower's own waits are 3 s)
POLL_S = 0.05


class Polling:
    """The `time` module as one of Flower's modules sees it, its waits cut to at most `POLL_S`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, POLL_S))


def run_tasks(runtime_address: str, node: Any, log: Path, done: Callable[[], bool]) -> None:
    """Run the SuperNode `node`'s ClientApp tasks, taken from its runtime API at `runtime_address`, each in a
    fork of this process, while `node` runs and until `done()`; the forks write to `log`."""
    # imported once here, so that every fork starts with it (PyTorch's optimisers import its compiler on
    # first use: 1.3 s a task)
    import torch._dynamo  # noqa: F401
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    quicken()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    children: set[int] = set()
    try:
        while node.poll() is None and not done():
            task = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if task.HasField("task") and task.token:
                children.add(_fork(runtime_address, task.token, log))
            children = {pid for pid in children if os.waitpid(pid, os.WNOHANG) == (0, 0)}
            time.sleep(POLL_S)
    finally:
        client.close()


def _fork(runtime_address: str, token: str, log: Path) -> int:
    """Run one ClientApp task in a fork of this process; return the fork's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(runtime_api_address=runtime_address, token=token, insecure=True)
        code = 0
    except SystemExit as e:
        # Flower's run_clientapp ends by exiting, with its own code
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def quicken() -> None:
    """Cut Flower's fixed waits in this process: a SuperNode's 3 s between asking for messages, and the 1 s
    (then doubling) before asking again for a message's contents that are not stored yet, which every
    message meets when it is asked for as soon as it is announced."""
    import flwr.supernode.start_client_internal as node
    from flwr.supercore.inflatable import inflatable_utils as objects

    node.time = Polling()  # type: ignore[assignment]
    for pull in (objects.pull_objects, objects.pull_and_inflate_object_from_tree):
        pull.__kwdefaults__ = {**(pull.__kwdefaults__ or {}), "initial_backoff": POLL_S, "backoff_cap": 1.0}


def main() -> None:
    """Run Flower's `flower-supernode` with the arguments given, its fixed waits cut (`quicken`)."""
    from flwr.supernode.cli.flower_supernode import flower_supernode

    quicken()
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
