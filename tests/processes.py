"""``cardsvc`` commands in processes of their own, for the tests whose point is the process (a run
killed by a signal, an exit status, the environment alone as its settings).

Each command runs in a new process forked from a fork server that has already imported
``cardsvc.cli``: a fresh interpreter spent seconds of CPU importing the code base before doing a
millisecond of work, for every command of every such test. The process is still the command's
own: its environment is the one given (nothing of the test's process, whose settings,
monkeypatches and password hashing stay behind), it dies by its own signals, and its exit status
and output are the command's, as ``python -m cardsvc`` gives them.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

_SERVER = multiprocessing.get_context("forkserver")
_SERVER.set_forkserver_preload(["cardsvc.cli"])


def _command(args: Sequence[str], env: Mapping[str, str], out: str, err: str) -> None:
    os.environ.clear()
    os.environ.update(env)
    # Standard input is /dev/null, as a command started without one has (and a server's worker
    # processes inherit it).
    stdin = os.open(os.devnull, os.O_RDONLY)
    os.dup2(stdin, 0)
    os.close(stdin)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    with open(out, "w") as stdout, open(err, "w") as stderr:
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
    from cardsvc.cli import main

    main(list(args), prog_name="cardsvc")


def start_cardsvc(
    *args: str, env: Mapping[str, str], stdout: Path | str, stderr: Path | str
) -> multiprocessing.process.BaseProcess:
    """``python -m cardsvc ARGS`` in ``env``, started and not waited for (a server): the process,
    its output going to the files named."""
    process = _SERVER.Process(target=_command, args=(args, dict(env), str(stdout), str(stderr)))
    process.start()
    return process


def run_cardsvc(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m cardsvc ARGS`` in ``env`` (default: this process's environment): its exit
    status (negative: the signal that ended it), stdout and stderr."""
    with tempfile.TemporaryDirectory(prefix="cardsvc-command-") as directory:
        out, err = Path(directory) / "stdout", Path(directory) / "stderr"
        process = _SERVER.Process(
            target=_command,
            args=(args, dict(os.environ if env is None else env), str(out), str(err)),
        )
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([sys.executable, "-m", "cardsvc", *args], timeout)
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "cardsvc", *args],
            process.exitcode,
            out.read_text(),
            err.read_text(),
        )
