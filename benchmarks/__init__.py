"""Side-by-side speed and memory comparisons against peers; each prints JSON lines."""
