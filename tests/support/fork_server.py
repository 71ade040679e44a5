"""``bbvi-kit`` processes without the start-up: a server that imports bbvi-kit once and forks one
child per command.

A fresh ``python -m bbvi_kit`` spends most of a small test run (48 steps on this project's 2-core
machines) importing torch, torch's compiler stack (the optimizers import it), Pyro and
matplotlib. The fault-injection tests start dozens of them. ``python tests/support/fork_server.py``
imports all of that once (as ``tests/support/kill_points.py`` does), never
runs a torch operation, and then, for each request on its stdin, forks a child that is the
process a test would have started: its own process id (a test signals or SIGKILLs it from
outside, or it kills itself through the fault plugin), the request's environment, working folder,
file-size limit, ``sys.argv`` and stdout/stderr files; it runs ``bbvi_kit.cli.main`` on the
arguments and ends as the interpreter would (atexit handlers, flushed streams, the exit code of
``sys.exit``, a traceback and 1 for an uncaught exception, death by SIGINT for an uncaught
KeyboardInterrupt). Everything the recipe names (plugin files, the fault plugin's environment
variables) is imported and read in the child, after the fork. The tests compare what the forked
children computed with a run of a fresh interpreter, bit for bit, so a difference between the two
would fail them; the tests about start-up itself keep a fresh interpreter.

The client half (:class:`ForkServer`, :class:`ForkedProcess`) is what the tests import: a
``subprocess.Popen``-like handle (``pid``, ``poll``, ``send_signal``, ``communicate``,
``returncode``, ``args``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MAIN = str(Path(__file__).resolve().parents[2] / "bbvi_kit" / "__main__.py")
PRELOAD = [  # what a run imports, best first
    "torch", "torch._dynamo", "pyro", "matplotlib.pyplot", "yaml", "click",
    "bbvi_kit", "bbvi_kit.cli", "bbvi_kit.runner", "bbvi_kit.sweep_runner", "bbvi_kit.plots", "bbvi_kit.report",
    "bbvi_kit_plugins.gaussian_vae",
]


def preload() -> None:
    """Import what a run imports, then draw and save one small figure (PNG and PDF, into memory):
    matplotlib loads its fonts and fills its text and glyph caches on the first figure it saves,
    about a second a child would otherwise spend. No torch operation runs."""
    import importlib
    import io

    for name in PRELOAD:
        importlib.import_module(name)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.loglog([1, 10, 100], [1.0, 0.3, 0.1], label="curve")
    ax.set_xlabel("iteration")
    ax.set_title("warm-up")
    ax.legend()
    for fmt in ("png", "pdf"):
        fig.savefig(io.BytesIO(), format=fmt)
    plt.close(fig)


# -- the server -----------------------------------------------------------------------------------
def _child(request: dict) -> None:  # never returns
    code = 1
    try:
        stdin = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((stdin, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("fsize") is not None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], resource.RLIM_INFINITY))
        sys.argv = [MAIN, *request["args"]]
        from bbvi_kit import cli

        try:
            cli.main(request["args"])
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # sys.exit("message"): printed, exit 1
                print(exc.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            import traceback

            traceback.print_exc()
            _shutdown()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # as the interpreter ends on one: killed by SIGINT
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:  # noqa: BLE001 - an uncaught exception: traceback and exit 1
            import traceback

            traceback.print_exc()
            code = 1
        _shutdown()
    finally:
        os._exit(code)


def _shutdown() -> None:
    """What the interpreter does at exit: join non-daemon threads, run atexit handlers, flush."""
    import atexit

    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - as at exit: a failed flush is not a crash
            pass


def _status(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    preload()
    reply = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=reply, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "start":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            answer: dict = {"pid": pid}
        elif op == "wait":
            deadline = time.monotonic() + request["timeout"]
            answer = {"status": None}
            while True:
                done, status = os.waitpid(request["pid"], os.WNOHANG)
                if done:
                    answer = {"status": _status(status)}
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        elif op == "poll":
            done, status = os.waitpid(request["pid"], os.WNOHANG)
            answer = {"status": _status(status) if done else None}
        else:
            answer = {"error": f"unknown op {op!r}"}
        print(json.dumps(answer), file=reply, flush=True)


# -- the client -----------------------------------------------------------------------------------
class ForkServer:
    """One server process (started with ``env``, which should hold OMP_NUM_THREADS and
    PYTHONHASHSEED: what is read when torch and Python start is the server's)."""

    def __init__(self, env: dict[str, str], cwd: Path | None = None) -> None:
        self._proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env, cwd=cwd, text=True, bufsize=1)
        self._lock = threading.Lock()
        self._files = Path(tempfile.mkdtemp(prefix="bbvi-forks-"))
        self._count = 0
        ready = self._proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the fork server did not start (exit {self._proc.wait()})")

    def _ask(self, request: dict) -> dict:
        with self._lock:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            answer = json.loads(self._proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def start(self, args: list[str], cwd: Path, env: dict[str, str], fsize: int | None = None) -> ForkedProcess:
        self._count += 1
        out, err = self._files / f"{self._count}.out", self._files / f"{self._count}.err"
        answer = self._ask({"op": "start", "args": [str(a) for a in args], "cwd": str(cwd), "env": env,
                            "fsize": fsize, "out": str(out), "err": str(err)})
        return ForkedProcess(self, ["bbvi-kit", *map(str, args)], answer["pid"], out, err)

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        for path in self._files.iterdir():
            path.unlink()
        self._files.rmdir()


class ForkedProcess:
    """A ``subprocess.Popen``-like handle on a forked ``bbvi-kit`` child."""

    def __init__(self, server: ForkServer, args: list[str], pid: int, out: Path, err: Path) -> None:
        self.server, self.args, self.pid, self._out, self._err = server, args, pid, out, err
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server._ask({"op": "poll", "pid": self.pid})["status"]
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def stderr_so_far(self) -> str:
        try:
            return self._err.read_text()
        except FileNotFoundError:  # the child has not opened it yet
            return ""

    def communicate(self, timeout: float) -> tuple[str, str]:
        if self.returncode is None:
            self.returncode = self.server._ask({"op": "wait", "pid": self.pid, "timeout": timeout})["status"]
            if self.returncode is None:
                os.kill(self.pid, signal.SIGKILL)
                self.server._ask({"op": "wait", "pid": self.pid, "timeout": 60})
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self._out.read_text(), self._err.read_text()


if __name__ == "__main__":
    serve()
