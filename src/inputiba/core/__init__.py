"""The method itself: bottleneck math, layer statistics, the three stages and their sequencer,
the settings, and the network plumbing (layers by name, split networks, folded copies).

Tensors in, tensors out: nothing here reads files or knows about images or text."""
