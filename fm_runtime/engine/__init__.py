"""Running a model: velocity callables with labels and guidance, backends (host loop, device
loop, baked graphs), the row tiler, request checks and the Sampler front door."""
