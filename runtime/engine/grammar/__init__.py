"""Grammar-constrained decoding: what a request constrains (constraints), compiled by llguidance (compiler),
followed token by token per sequence (matcher), and applied to the logits on the device (bitmask)."""
