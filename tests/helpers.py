"""Shared test helpers and figures: imported by test modules, never the other way round."""

# Largest |logit - fp32 logit| allowed, relative to the largest |fp32 logit|, on the tests' two-layer
# nets. Rounding to a step s adds a uniform error of at most s/2, so a K-term dot product's relative
# error is about (s / max) * sqrt(1/12) * (max / rms) per operand: with 7-8 bit weights (s = max/64 or
# max/127) and 8-bit activations (s = range/255) that is 0.5-1 % per layer, ~2 % over two layers;
# int8 methods get 2.5-4x that. Casts keep 11 (fp16: 0.05 % per op) or 8 (bf16: 0.4 %) significant
# bits. fixed_scale_int8 rounds to a fixed 1/128 grid whatever the weights' range: weights of ~0.1
# keep ~3.5 bits, hence 15 %.
TOLERANCE = {
    "fp32": 0.0,
    "fp16": 0.005,
    "bf16": 0.03,
    "dynamic_int8": 0.05,
    "fixed_scale_int8": 0.15,
    "weight_only_int8": 0.03,
    "onnx_dynamic_int8": 0.05,
    "onnx_static_int8": 0.08,
}
