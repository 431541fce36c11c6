"""Profiles: the measured points of a model x engine x GPU, from the stores shipped with
infergy (shipped/, one a model x card) or a user's.

- points.py: the one reader of results stores (`stored_points`, `stored_replays`) and every
  ok point as a DataFrame for the report (`load_points`).
- load.py: the B = max points of one model, engine and card as a `Profile`, and what to say
  (with the sweep that measures them) where the stores lack them.
"""

from infergy.profile.load import (
    PROFILES,
    EstimateError,
    MissingPoints,
    Profile,
    load_card_profile,
    load_profile,
    points_by_gpu,
    shipped_profiles,
)
from infergy.profile.points import POINT_COLUMNS, load_points, stored_points, stored_replays

__all__ = ["POINT_COLUMNS", "PROFILES", "EstimateError", "MissingPoints", "Profile",
           "load_card_profile", "load_points", "load_profile", "points_by_gpu",
           "shipped_profiles", "stored_points", "stored_replays"]
