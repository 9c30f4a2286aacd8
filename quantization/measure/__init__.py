"""What measures the rows: accuracy in one pass, latency per call, memory, the machine, end to end."""
