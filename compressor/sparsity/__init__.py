"""Sparsity: N:M masks and their checks (nm), which layers take them (selection), and the
terms that sparsity-aware training plugs into the one loop (regularizers, srste, monitor)."""

from compressor.sparsity.nm import is_nm, nm_mask, onnx_nm_report, to_semi_structured

__all__ = ["is_nm", "nm_mask", "onnx_nm_report", "to_semi_structured"]
