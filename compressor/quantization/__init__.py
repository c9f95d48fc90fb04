"""INT8: the scheme shared by the ONNX quantiser and QAT's fake quant, the layers it covers,
calibration on real training batches, per-layer error, and the onnxruntime.quantization call."""
