"""The quantization engine: methods, artifacts and measurement, usable without Lightning."""
