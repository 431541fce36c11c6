import sys, runpy
import numpy as np
sys.path.insert(0, "src")
import infergy.estimate.transfer as T
from infergy.estimate.steps import FEATURES
OPS = {"llama-3.2-1b": (40, 25), "llama-3.2-3b": (40, 25), "llama-3.1-8b": (40, 25), "olmo-7b": (32, 18),
       "deepseek-r1-distill-qwen-1.5b": (40, 25), "olmoe-1b-7b": (77, 25), "qwen3-30b-a3b": (79, 25)}
mode = "step"; script = sys.argv.pop(1)
orig = T.drivers
def drivers(spec):
    x = orig(spec)
    per, rest = OPS[spec.name]
    layers = x[T.LAYERS]
    v = layers * per / 40 if mode == "layer" else (layers * per + rest) / 40
    return np.append(x, v)
T.drivers = drivers
T.PRICES = (T.PRICES[0], T.PRICES[1], ((FEATURES.index("steps"),), len(FEATURES) + 1))
sys.argv = [script] + sys.argv[1:]
runpy.run_path(script, run_name="__main__")
