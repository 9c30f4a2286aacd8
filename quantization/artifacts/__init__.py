"""How a quantized model is written and run: artifact files, ONNX graphs, term bags, torch payloads."""
