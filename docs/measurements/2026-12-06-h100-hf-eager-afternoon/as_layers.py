import sys, runpy
sys.path.insert(0, "src")
import infergy.estimate.transfer as T
T.LAUNCHES_OPS = ()  # every engine's step priced by its layers, as before 2026-12-06 afternoon
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
