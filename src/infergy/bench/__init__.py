"""Running measurements: one point (`point`), and later sweeps, replays and serving."""
