"""fm-run: the command group, its options, sample and inspect commands, the supervisor that makes
every run stoppable, output files, the memory budget, PNG and plots."""
import os

# The commands write only the outputs they are asked for: onnxruntime (1.2x+) keeps a device id and
# an event database under ~/.cache/Microsoft unless this is set before it loads. Every fm-* command
# enters through this package (fm-run here, fm-train and fm-export through cli.io and cli.runner)
# before anything imports onnxruntime; the library itself sets nothing.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
