"""The model file: the contract reader and its schema, the spec it fills, the graph's own
inputs and outputs, opening an onnxruntime session (providers, self-test) and stopping graph runs."""
