"""fm-run: the command group, its options, and the sample, serve and inspect commands (what every
fm-* command shares is in fm_runtime.tools)."""
from .. import tools  # noqa: F401  sets ORT_DISABLE_TELEMETRY before anything imports onnxruntime
