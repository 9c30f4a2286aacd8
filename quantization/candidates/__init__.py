"""What makes the models a report compares: layer swaps, quantization-aware training, vocabulary pruning."""
