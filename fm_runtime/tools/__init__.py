"""What the fm-* command-line tools share (fm-run, fm-train, fm-export), below any one of them:
running a command (runner.py, supervisor.py), its --timeout and --max-memory (options.py,
limits.py), output files and progress lines (io.py), PNG and plots, timings."""
import os

# The commands write only the outputs they are asked for: onnxruntime (1.2x+) keeps a device id and
# an event database under ~/.cache/Microsoft unless this is set before it loads. Every fm-* command
# enters through this package (fm-run through fm_runtime.cli, fm-train and fm-export through
# tools.io and tools.runner) before anything imports onnxruntime; the library itself sets nothing.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
