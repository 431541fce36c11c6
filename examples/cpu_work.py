"""A small CPU workload for `make run`: about two seconds of hashing on one core.

Run it under the meter: `infergy meter -- python examples/cpu_work.py`.
"""

import hashlib
import time

digest = b""
start = time.perf_counter()
rounds = 0
while time.perf_counter() - start < 2.0:
    for _ in range(10_000):
        digest = hashlib.sha256(digest).digest()
    rounds += 10_000
print(f"cpu_work: {rounds:,} sha256 rounds in {time.perf_counter() - start:.2f} s")
