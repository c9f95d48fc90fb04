"""Distillation recovery: losses composed by name, layer pairing, channel adapters, and the
terms that plug them into the one training loop (the `distill` pass wires them up)."""
