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

ENTRY = {"fm-run": "fm_runtime.cli.main", "fm-train": "training.cli", "fm-export": "training.export_cli"}
PRELOAD = {   # imported by the server before it forks; each tool's own entry module is added
    "fm-run": [],
    "fm-train": ["torch", "onnx", "onnxruntime", "torch.onnx", "torch.export", "training.export_cli"],
}
SERVER_OF = {"fm-run": "fm-run", "fm-train": "fm-train", "fm-export": "fm-train"}
_torch_threads = None       # torch's default, restored in each child of the torch server


def _warm_up_torch() -> None:
    global _torch_threads
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


class Started:
    """A command the server has forked and is waiting on: pid, send_signal, wait -> exit code,
    communicate -> (stdout, stderr), as subprocess.Popen gives them (for tests that signal a run)."""

    def __init__(self, conn: socket.socket, stream, out: Path, err: Path, timeout: float):
        self._conn, self._stream, self._out, self._err = conn, stream, out, err
        conn.settimeout(timeout)
        self.pid, self.returncode = int(stream.readline()), None

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                self.returncode = int(self._stream.readline())
            except TimeoutError:
                raise subprocess.TimeoutExpired(str(self.pid), timeout) from None
            self._conn.close()
            self.stdout, self.stderr = (p.read_text(errors="replace") for p in (self._out, self._err))
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout, self.stderr

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()


class Warm:
    """Client: run(tool, args, cwd, env, timeout) -> CompletedProcess, as subprocess.run with
    capture_output=True and text=True would return it; start(...) -> Started, as Popen."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="fm-warm-"))
        self.servers: dict[str, subprocess.Popen] = {}
        self.ready: set[str] = set()
        self.calls = 0

    def prestart(self, tools=tuple(SERVER_OF)) -> None:
        """Start the servers of `tools` now, without waiting: they import and warm up beside the
        first tests."""
        for server in {SERVER_OF[tool] for tool in tools}:
            self._launch(server)

    def _launch(self, server: str) -> None:
        if server not in self.servers:
            repo = str(Path(__file__).resolve().parents[1])
            address = self.dir / f"{server}.sock"
            with open(self.dir / f"{server}.log", "w") as errors:
                self.servers[server] = subprocess.Popen(
                    [sys.executable, "-c", f"import sys; sys.path.insert(0, {repo!r}); "
                     f"from tests.warm import serve; serve({server!r}, {str(address)!r})"],
                    cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True)

    def _connect(self, tool: str) -> socket.socket:
        server = SERVER_OF[tool]
        self._launch(server)
        if server not in self.ready:
            p = self.servers[server]
            if p.stdout.readline().strip() != "ready":
                log = (self.dir / f"{server}.log").read_text()
                raise RuntimeError(f"the warm {server} server did not start (exit {p.wait()}): {log}")
            self.ready.add(server)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.dir / f"{server}.sock"))
        return conn

    def start(self, tool: str, args, cwd=None, env: dict | None = None, timeout: float = 300) -> Started:
        self.calls += 1
        out, err = self.dir / f"{self.calls}.out", self.dir / f"{self.calls}.err"
        out.write_bytes(b"")
        err.write_bytes(b"")
        request = dict(tool=tool, args=list(args), cwd=str(cwd or os.getcwd()), env=dict(env or os.environ),
                       stdout=str(out), stderr=str(err))
        conn = self._connect(tool)
        stream = conn.makefile("rw")
        stream.write(json.dumps(request) + "\n")
        stream.flush()
        return Started(conn, stream, out, err, timeout)

    def run(self, tool: str, args, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
        started = self.start(tool, args, cwd, env, timeout)
        try:
            code = started.wait(timeout)
        except subprocess.TimeoutExpired:
            started.kill()
            raise subprocess.TimeoutExpired([tool, *args], timeout) from None
        for p in (started._out, started._err):
            p.unlink()
        return subprocess.CompletedProcess([tool, *args], code, started.stdout, started.stderr)

    def close(self) -> None:
        for p in self.servers.values():
            p.kill()
            p.wait()
        for f in self.dir.iterdir():
            f.unlink()
        self.dir.rmdir()
