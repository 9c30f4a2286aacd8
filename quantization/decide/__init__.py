"""What decides: per-layer sensitivity and fallback, objectives, the size-accuracy frontier, the recommendation."""
