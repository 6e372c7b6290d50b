"""Flower's engine (SuperLink, SuperNode) as a secure-aggregation federation runs it: its waits cut, a
client's tasks run warm, and each process tied to the lepton process that started it.

Left as it comes, Flower's engine spends most of a SecAgg+ round waiting, not computing: a SuperNode asks
the SuperLink for work every 3 s and starts a fresh Python process (importing Flower, PyTorch and the app,
≈ 2.5 s) for each of the four messages a client gets per round, and the server's grid also polls every
3 s (docs/design/secure-aggregation.md). Here the SuperNode runs as Flower's own `flower-supernode`
(`python -m lepton_ai.privacy.engine supernode ARGS`) with those fixed waits cut to `POLL_S`, in Flower's
`process` isolation, and `run_tasks` takes its ClientApp tasks from its runtime API and runs each in a
fork of a process that has imported everything once, through Flower's own `run_clientapp`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

# how soon a SuperNode or the server's grid asks again for news while messages flow (Flower's own waits are
# 3 s), and the longest a SuperNode waits once idle: ten idle clients asking 20 times a second would take
# a small machine's cores from the ones at work
POLL_S = 0.05
IDLE_S = 0.5


class Polling:
    """The `time` module as one of Flower's modules sees it: its waits start at `POLL_S` and double while
    nothing comes in, up to `IDLE_S`, back to `POLL_S` once the caller has had work between two waits."""

    def __init__(self) -> None:
        self.wait, self.woke = POLL_S, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        # a loop that only asked and found nothing comes back within a few milliseconds
        if time.monotonic() - self.woke > 0.1:
            self.wait = POLL_S
        time.sleep(min(seconds, self.wait))
        self.wait, self.woke = min(2 * self.wait, IDLE_S), time.monotonic()


class Tail:
    """A file another process appends to, read as it grows: each `read` returns the complete lines written
    since the last one, and passes them on to `sink` (if any)."""

    def __init__(self, path: Path, sink: IO[str] | None = None) -> None:
        self.path, self.sink, self.offset = path, sink, 0

    def read(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read()
        complete = text[: text.rfind(b"\n") + 1]
        self.offset += len(complete)
        lines = complete.decode(errors="replace")
        if self.sink is not None and lines:
            self.sink.write(lines)
        return lines


def run_tasks(runtime_address: str, node: Any, log: Tail) -> None:
    """Run the SuperNode `node`'s ClientApp tasks, taken from its runtime API at `runtime_address` as its
    `log` announces them, each in a fork of this process (which writes to that log), until the SuperNode
    gives up reaching the server (the federation has ended) or exits."""
    # imported once here, so that every fork starts with it (PyTorch's optimisers import its compiler on
    # first use: 1.3 s a task)
    import torch._dynamo  # noqa: F401
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    quicken()
    retry = make_simple_http_retry_invoker()
    # a SuperNode that has stopped answering is not waited for: the loop looks at its log again
    retry.max_tries = 3
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=retry,
    )
    children: set[int] = set()
    asked = 0.0
    try:
        while node.poll() is None:
            news = log.read()
            # Flower's SuperNode logs this, and then waits, once the SuperLink has stayed gone
            if "Giving up reconnection" in news:
                return
            # a message is stored (its task can start at once), or a while has passed: ask for a task
            if "Received successfully" in news or time.monotonic() - asked > 1.0:
                asked = time.monotonic()
                token = _acquire(client, AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
                if token:
                    children.add(_fork(runtime_address, token, log.path))
            children = {pid for pid in children if os.waitpid(pid, os.WNOHANG) == (0, 0)}
            time.sleep(POLL_S)
    finally:
        client.close()


def _acquire(client: Any, request: Any) -> str | None:
    """Return the token of a task the SuperNode has for us, or None (none waiting, or no answer)."""
    try:
        task = client.AcquireTask(request)
    except Exception:
        return None
    return str(task.token) if task.HasField("task") and task.token else None


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


def exit_with_parent() -> None:
    """Stop this process (as Ctrl-C does, then at once) when the process that started it has gone."""
    parent = os.getppid()

    def watch() -> None:
        # once the parent has gone, this process belongs to another (even while the parent is a zombie)
        while os.getppid() == parent:
            time.sleep(0.2)
        signal.raise_signal(signal.SIGINT)
        time.sleep(5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    """Run Flower's `flower-superlink` or `flower-supernode` (the first argument) with the arguments after
    it, tied to this process's parent; a SuperNode's waits cut (`quicken`)."""
    from flwr.superlink.cli import flower_superlink
    from flwr.supernode.cli import flower_supernode

    component, *sys.argv[1:] = sys.argv[1:]
    start = {"superlink": flower_superlink, "supernode": flower_supernode}[component]
    exit_with_parent()
    if component == "supernode":
        quicken()
    sys.argv[0] = f"flower-{component}"
    start()


if __name__ == "__main__":
    main()
