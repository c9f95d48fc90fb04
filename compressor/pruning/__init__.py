"""Structured pruning around torch-pruning's dependency graph, one concern a module:

graph         the dependency graph as configured here; the survey of prunable groups and why others are not
fixed         layers whose output width a model declares fixed (a detector's head outputs), with the reason
attention     head-prunable equivalents of torchvision's and Ultralytics' attention blocks; removing whole heads
importance    channel and head ranking criteria
engine        one pruning step (heads, then channels) and the history replay checkpoints use
targets       ratio search for MACs / params budgets; latency targets measured on a backend
diagnose      failures turned into one line naming the module and the operation
inspection    what `compress inspect` reports; the search for every group that breaks when cut
sensitivity   what `compress analyze` measures
sweep         the torchvision and timm model-zoo check behind docs/pruning.md
leftovers     tensors a forward leaves in module attributes (caches), kept from copies and traces
tp_internals  torch-pruning's private internals we rely on, in one place, guarded by tests/test_tp_internals.py

MACs and parameters are counted in compressor/measure.py.
"""
