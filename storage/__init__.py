"""Plumbing every layer shares: reading and checking checkpoints, writing files atomically."""
