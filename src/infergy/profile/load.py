"""A profile: the measured B = max points of one model on one engine and GPU, from the stores
shipped with infergy (profile/shipped/, one a model x card) or a user's, and what to say,
with the command that measures them, where the stores lack them."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from infergy.models.catalog import UnknownModelError, get_model
from infergy.models.gpus import NVML_NAMES, UnknownGpuError, get_gpu
from infergy.profile.points import stored_points
from infergy.workloads.bins import PAPER_INPUT_EDGES, PAPER_OUTPUT_EDGES

# The shipped profiles' folder
PROFILES = Path(str(resources.files("infergy") / "profile" / "shipped"))
# Where a sweep of the user's own is advised to write (sweep's --db default), never a store
# shipped with infergy: that belongs to the package, and may not be writable.
OWN_STORE = "infergy.db"


def shipped_profiles(model: str | None = None) -> list[Path]:
    """The results stores shipped in infergy/profile/shipped/ (read when no profile is given), one a
    card, named MODEL-CARD.db; with `model`, that model's only."""
    return sorted(f for f in PROFILES.iterdir() if f.name.endswith(".db")
                  and (model is None or f.name.startswith(f"{model}-")))


class EstimateError(ValueError):
    """An estimate that cannot be made; the message says what is missing and how to get it,
    `brief` what is missing alone (a line of a list of such, as `infergy advise` prints)."""

    def __init__(self, message: str, brief: str = ""):
        super().__init__(message)
        self.brief = brief or message


class MissingPoints(EstimateError):
    """A profile without the B = max points of some bins a trace needs (`missing`, as (I, O);
    None: without any point of this model, engine and GPU)."""

    def __init__(self, message: str, missing: list[tuple[int, int]] | None = None,
                 brief: str = ""):
        super().__init__(message, brief)
        self.missing = missing


@dataclass
class Profile:
    """Measured energy of one model on one engine and GPU, at B = max, per (I, O)."""

    model: str
    engine: str
    gpu: str  # the card's name as measured (NVML)
    points: dict[tuple[int, int], dict]  # (I, O) -> {"batch", "energy_j", "id", ...}
    sources: list[str] = field(default_factory=list)
    # Where some points are predicted, not measured (infergy.estimate.filled; those points
    # say "predicted": True): the error band the model showed, and on which points.
    predicted: dict | None = None


def load_profile(stores: list[Path], model: str, engine: str, gpu: str | None = None,
                 decoding: str = "greedy") -> Profile:
    """The newest ok B = max point of each (I, O) for this model and engine in the stores,
    on one GPU (`gpu`: a models.gpus name or an NVML name; None: the only one there), the
    model on that GPU alone (TP 1: the estimate is of one GPU's work)."""
    return pick_profile(points_by_gpu(stores, model, engine, decoding), stores, model, engine,
                        None if gpu is None else get_gpu(gpu).name, gpu)


def load_card_profile(stores: list[Path], model: str, engine: str, card: str,
                      decoding: str = "greedy", shipped: bool = False) -> Profile:
    """As load_profile, on the card a run is on: `card` as NVML names it (the meter's
    reading; a card infergy's GPU table lacks is matched by that name). `shipped`: the stores
    are the profiles shipped with infergy (the message says how to add this card's).
    MissingPoints where the stores hold no point of this model and engine on that card: a
    profile's B = max is its own card's, and another card's may not fit this one."""
    found = points_by_gpu(stores, model, engine, decoding)
    if any(card_of(g) == card_of(card) for g in found):
        return pick_profile(found, stores, model, engine, card_of(card), card)
    held = f"they hold it on {', '.join(sorted(found))}" if found else \
        what_stores_hold(stores, model, [engine], card, decoding)[0]
    other = ("; or name a card they hold with --gpu (its B and its estimate are that card's)"
             if found else "")
    mine = [p for p in stores if p.name.startswith(f"{model}-")]
    how = how_to_measure(model, engine, card, repository=shipped and bool(mine),
                         stores=[] if shipped else stores)
    where = (f"shipped: {', '.join(p.name for p in mine) or 'none of it'}" if shipped
             else ", ".join(map(str, stores)))
    raise MissingPoints(f"no {'shipped ' if shipped else ''}profile of {model} on {engine} for "
                        f"{card}, the card this runs on ({where}; {held}): {how}{other}")


def how_to_measure(model: str, engine: str, card: str | None, repository: bool,
                   stores: list[Path] | None = None) -> str:
    """How to measure a missing profile of `model` on `card` (a models.gpus or NVML name;
    None: not known): a sweep of one's own (`sweep_advice`, into `stores`' one store of the
    user's or infergy.db), and where `repository` (the model's profile is shipped for other
    cards, made so) the repository's sweep that adds that card's store to the shipped ones."""
    own = sweep_advice(model, engine, stores or [])
    if not repository:
        return f"measure one on an NVIDIA GPU with {own}"
    try:  # as the shipped stores' names give it: h100 (the SXM card the scripts accept), h200
        tag = get_gpu(card).name.split("-")[0] if card else "CARD"
    except UnknownGpuError:
        tag = "CARD"
    return (f"measure it on that card with {own} (to ship it with infergy, from the "
            f"repository: `infergy sweep benchmarks/sweeps/profile-{model}.yaml "
            f"--db src/infergy/profile/shipped/{model}-{tag}.db "
            f"--resume-by model`, every GPU of the host at once)")


def is_shipped(path: Path | str) -> bool:
    """Whether `path` is one of the stores shipped with infergy (its profile/shipped/)."""
    return Path(path).resolve().parent == PROFILES.resolve()


def own_store(stores: list[Path] | list[str], model: str) -> tuple[str, str]:
    """Where a user's sweep of `model` adds to `stores` (--db), and what to pass after: the
    one store given where it is the user's (nothing to add), else infergy.db, passed with
    --profile after `stores` (the shipped ones of `model` too: they are read by default only
    where no store is given)."""
    if len(stores) == 1 and not is_shipped(stores[0]):
        return str(stores[0]), ""
    kept = "".join(f"--profile {s} " for s in stores
                   if not is_shipped(s) or Path(s).name.startswith(f"{model}-"))
    return OWN_STORE, f", then pass {kept}--profile {OWN_STORE}"


def sweep_advice(model: str, engine: str, stores: list[Path]) -> str:
    """The sweep that measures B = max points of `model` on `engine` over the study's bins,
    into a store of the user's (`own_store`): the preset paper-bins, or where the model's
    context is shorter than those bins, a spec of the bins within it."""
    db, after = own_store(stores, model)
    try:
        context = get_model(model).max_context
    except UnknownModelError:  # an engine's own test model, say: the preset
        context = None
    longest = PAPER_INPUT_EDGES[-1] + PAPER_OUTPUT_EDGES[-1]
    if context is None or context >= longest:
        return f"`infergy sweep paper-bins -m {model} -e {engine} -b max --db {db}`{after}"
    outputs = [o for o in PAPER_OUTPUT_EDGES if PAPER_INPUT_EDGES[0] + o <= context]
    inputs = [i for i in PAPER_INPUT_EDGES if i + max(outputs, default=0) <= context]
    grid = (f"{{models: [{model}], engines: [{engine}], batch_sizes: [max], "
            f"input_tokens: {inputs}, output_tokens: {outputs}}}")
    return (f"a spec file holding {grid} (the study's bins within {model}'s context of "
            f"{context} tokens; paper-bins asks for {longest}) and `infergy sweep SPEC --db "
            f"{db}`{after}")


def what_stores_hold(stores: list[Path], model: str, engines: list[str],
                     card: str | None = None, decoding: str = "greedy") -> tuple[str, bool]:
    """Why the stores give no B = max points of `model` on `engines` (on `card`, a models.gpus
    or NVML name; None: on any GPU), said as what they hold instead: such points on other
    GPUs; such points without energy (measured where no energy sensor could be read: True
    beside the phrase); the model on other engines; or not the model at all."""
    gpus: dict[str, set[str]] = {}  # engine -> the GPUs it has points with energy on
    engines_held: set[str] = set()
    unmetered = 0  # points of `engines` without energy
    models: set[str] = set()
    for _, p, run in stored_points(stores, tp=1, engine_options="{}", batch_requested="max",
                                   status="ok", decoding=decoding):
        models.add(p["model"])
        if p["model"] != model:
            continue
        engines_held.add(p["engine"])
        if p["energy_j"] is None:
            unmetered += p["engine"] in engines
        else:
            gpus.setdefault(p["engine"], set()).add(run.get("gpu_name") or p["device"])
    on = {g for e in engines for g in gpus.get(e, ())}
    if on:  # the engines are measured, on other GPUs
        return f"they hold it on {', '.join(sorted(on))}, not on {card}", False
    if unmetered:
        return (f"the {unmetered} they hold have no energy: they were measured where no "
                f"energy sensor could be read, on a CPU or a GPU NVML cannot read", True)
    if engines_held:
        held = ", ".join(e if e in gpus else f"{e} (without energy)"
                         for e in sorted(engines_held))
        return f"they hold {model} on {held}, not on {', '.join(engines)}", False
    others = f"; they hold {', '.join(sorted(models))}" if models else ""
    return f"they hold no B = max point of {model}{others}", False


def points_by_gpu(stores: list[Path], model: str, engine: str,
                  decoding: str = "greedy") -> dict[str, dict[tuple[int, int], dict]]:
    """GPU as measured (NVML name) -> the newest ok B = max point of each (I, O), at TP 1:
    {"batch", "energy_j" (J), "time_s" (s), "id", "store"}."""
    found: dict[str, dict[tuple[int, int], dict]] = {}
    for path, p, run in stored_points(stores, model=model, engine=engine, decoding=decoding,
                                      tp=1, engine_options="{}", batch_requested="max",
                                      status="ok"):
        if p["energy_j"] is None:  # measured where no energy sensor could be read
            continue
        name = run.get("gpu_name") or p["device"]
        # The stores list their points oldest first: a newer point of an (I, O) replaces it.
        found.setdefault(name, {})[(p["input_tokens"], p["output_tokens"])] = {
            "batch": p["batch"], "energy_j": p["energy_j"], "time_s": p["time_s"],
            "id": p["id"], "store": str(path)}
    return found


def card_of(measured_name: str) -> str:
    """A GPU as measured -> its models.gpus name (the NVML name where the table lacks it)."""
    return NVML_NAMES.get(measured_name, measured_name)


def card_of_file(path: Path, model: str) -> str | None:
    """The models.gpus name of the card of a shipped store MODEL-CARD.db (None: unknown)."""
    try:
        return get_gpu(path.name[len(model) + 1:-len(".db")]).name
    except UnknownGpuError:
        return None


def pick_profile(found: dict[str, dict[tuple[int, int], dict]], stores: list[Path], model: str,
                 engine: str, card: str | None, asked: str | None = None) -> Profile:
    """The Profile of one GPU out of `found` (`points_by_gpu`; `card`: a models.gpus name;
    None: the only one there). MissingPoints where it holds none of that GPU, EstimateError
    where it holds several and `card` does not choose."""
    if card is not None:
        found = {k: v for k, v in found.items() if card_of(k) == card}
    where = ", ".join(map(str, stores))
    if not found:
        on = asked or card
        held, unmetered = what_stores_hold(stores, model, [engine], on)
        raise MissingPoints(f"no B = max points of {model} on {engine}"
                            f"{f' on {on}' if on else ''}{' with energy' if unmetered else ''}"
                            f" in {where} ({held}): measure them on an NVIDIA GPU with "
                            f"{sweep_advice(model, engine, stores)}")
    if len(found) > 1:
        raise EstimateError(f"{where} hold {model} on {engine} for several GPUs "
                            f"({', '.join(found)}): choose one with --gpu")
    (name, points), = found.items()
    return Profile(model, engine, name, points, [str(s) for s in stores])
