"""``python -m bench``: latency, stage split, floor, peak RSS and throughput of the correction pipeline."""
