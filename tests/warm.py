"""Console scripts run from a warm interpreter, for the tests.

A fresh `fm-train` or `fm-export` process spends 3-4 s importing torch, onnx and the project
before it does anything, and the suite runs dozens of them. A warm server imports them once and
forks a child per command: the child is a process of its own (its own pid, working directory,
environment, signal handlers, stdin from /dev/null, stdout and stderr in files, exit code), so a
test sees what it would see from a fresh interpreter, minus the import time. fm-run has its own
server that imports only what fm-run imports (numpy, onnxruntime, click): its children's memory
and modules stay those of a real fm-run.

The torch server also exports one tiny network and takes one Adam step before it serves, so
that each child starts past torch's one-time setup (dynamo, decomposition tables, the ONNX
operator table: 3-4 s of the first export in a process). It does so on one thread, so that no
OpenMP pool exists to be forked, and each child gets torch's default thread count back.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ENTRY = {"fm-run": "fm_runtime.cli.main", "fm-train": "training.cli", "fm-export": "export.cli"}
PRELOAD = {   # imported by the server before it forks; each tool's own entry module is added
    "fm-run": [],
    "fm-train": ["torch", "onnx", "onnxruntime", "torch.onnx", "torch.export", "export.cli"],
}
SERVER_OF = {"fm-run": "fm-run", "fm-train": "fm-train", "fm-export": "fm-train"}
_torch_threads = None       # torch's default, restored in each child of the torch server


def _warm_up_torch() -> None:
    global _torch_threads
    import tempfile

    import torch
    import tqdm

    from export import export_velocity
    _torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))
    with tempfile.TemporaryDirectory() as d:
        export_velocity(net, f"{d}/warm.onnx", data_shape=2, call="cat(x,t)")
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).pow(2).mean().backward()
    opt.step()
    if tqdm.tqdm.monitor is not None:        # a progress bar's helper thread: a child starts its own
        tqdm.tqdm.monitor.exit()
        tqdm.tqdm.monitor = None


def _child(request: dict) -> None:
    """In the forked child: become the command (never returns)."""
    code = 1
    try:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(s, signal.SIG_DFL if s != signal.SIGINT else signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        fds = [os.open(os.devnull, os.O_RDONLY), os.open(request["stdout"], os.O_WRONLY),
               os.open(request["stderr"], os.O_WRONLY)]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.argv = [request["tool"], *request["args"]]
        if _torch_threads is not None:
            import torch
            torch.set_num_threads(_torch_threads)
        try:
            __import__(ENTRY[request["tool"]], fromlist=["main"]).main()
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            import traceback
            traceback.print_exc()
        import atexit
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def serve(tool: str, address: str) -> None:
    """The server: import, then fork one child per request, one request at a time. It ends with
    the test session (killed at its end, or by the kernel when the session's process dies)."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG
    for name in [*PRELOAD[tool], ENTRY[tool]]:
        __import__(name)
    if tool == "fm-train":
        _warm_up_torch()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(1)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn, conn.makefile("rw") as stream:
            line = stream.readline()
            if not line:
                return
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                _child(json.loads(line))
            stream.write(f"{pid}\n")
            stream.flush()
            _, status = os.waitpid(pid, 0)
            stream.write(f"{os.waitstatus_to_exitcode(status)}\n")
            stream.flush()


class Warm:
    """Client: run(tool, args, cwd, env, timeout) -> CompletedProcess, as subprocess.run with
    capture_output=True and text=True would return it."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="fm-warm-"))
        self.servers: dict[str, subprocess.Popen] = {}

    def _address(self, tool: str) -> str:
        server = SERVER_OF[tool]
        address = str(self.dir / f"{server}.sock")
        if server not in self.servers:
            repo = str(Path(__file__).resolve().parents[1])
            log = self.dir / f"{server}.log"
            with open(log, "w") as errors:
                p = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {repo!r}); "
                                      f"from tests.warm import serve; serve({server!r}, {address!r})"],
                                     cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                     text=True)
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the warm {server} server did not start (exit {p.wait()}): {log.read_text()}")
            self.servers[server] = p
        return address

    def run(self, tool: str, args, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
        out, err = self.dir / "stdout", self.dir / "stderr"
        out.write_bytes(b"")
        err.write_bytes(b"")
        request = dict(tool=tool, args=list(args), cwd=str(cwd or os.getcwd()), env=env,
                       stdout=str(out), stderr=str(err))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self._address(tool))
            conn.settimeout(timeout)
            stream = conn.makefile("rw")
            stream.write(json.dumps(request) + "\n")
            stream.flush()
            pid = int(stream.readline())
            try:
                code = int(stream.readline())
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired([tool, *args], timeout) from None
        text = lambda p: p.read_text(errors="replace")        # noqa: E731
        return subprocess.CompletedProcess([tool, *args], code, text(out), text(err))

    def close(self) -> None:
        for p in self.servers.values():
            p.kill()
            p.wait()
        for f in self.dir.iterdir():
            f.unlink()
        self.dir.rmdir()
