"""Whether a stored B = max still answers a sweep: a search for the largest batch that fits
stands only under a cap that would find it again (`reusable_max`)."""

from __future__ import annotations

import json


def reusable_max(batch: int, batch_search: str | None, cap: int) -> bool:
    """Would a search for B = max under `cap` find this stored one (of `batch`, found by the
    search its `batch_search` column holds, as stored: JSON text) again? Not where the batch
    passes the cap (the cap was lowered since), nor where only the stored search's cap
    bounded it and the new cap holds twice it (a larger batch may fit). A search that met
    memory above its batch (an out-of-memory try, earlier ones, or the memory model's
    estimate under twice the batch) stands under any cap that holds its batch, as does one
    with no search recorded (or one not readable as a search)."""
    if batch > cap:
        return False
    search = _search(batch_search)
    if 2 * batch > cap or search is None:
        return True
    tried = search.get("tried") or []
    estimate = search.get("estimate")
    return (any(t.get("status") == "oom" for t in tried) or bool(search.get("earlier_oom"))
            or (estimate is not None and estimate < 2 * batch))


def _search(text: str | None) -> dict | None:
    """A stored search's JSON as an object, None where empty or not one."""
    try:
        value = json.loads(text) if text else None
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None
