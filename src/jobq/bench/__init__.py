"""``jobq bench``: measured throughput and latency, each case checked against the database."""
