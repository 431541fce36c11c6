"""infergy: measure and model the energy of large-language-model inference.

    import infergy

    # A workload's energy from measured profiles (no GPU needed): what `infergy estimate` prints
    result = infergy.estimate("azure-code-2023", model="llama-3.1-8b", engine="hf-eager,vllm")
    result.rows()             # a dict a GPU and engine: kwh, j_per_request, saving_vs_baseline ...

    # Energy of any code: idle power first, then windows
    with infergy.open_meter() as meter:
        with meter.window("work") as w:
            ...
    w.measurement.energy_j    # GPU J (None, with .reason, where no GPU sensor could be read)

    # One point, as `infergy measure` measures it (the `measure` extra: torch, transformers)
    infergy.measure("llama-3.1-8b", batch=8, input_tokens=512, output_tokens=128).energy_j

`infergy.estimate` is also the package of the estimator (`from infergy.estimate import ...`).
Importing infergy loads neither torch nor pandas.
"""

__version__ = "0.1.0"  # before the imports: infergy.provenance reads it

from infergy import estimate  # callable: infergy.estimate(trace, model=...)
from infergy.api import measure
from infergy.meter import Measurement, open_meter
from infergy.profile import EstimateError

__all__ = ["EstimateError", "Measurement", "__version__", "estimate", "measure", "open_meter"]
