import copy, sys, collections, torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache
sys.path.insert(0, "src")
from infergy.models import get_model

VIEWS = {"view", "_unsafe_view", "reshape", "transpose", "t", "permute", "expand", "slice", "select",
         "unsqueeze", "squeeze", "as_strided", "alias", "detach", "split", "unbind", "narrow",
         "_reshape_alias", "split_with_sizes", "lift_fresh", "view_as", "chunk"}
class Count(TorchDispatchMode):
    def __init__(self): super().__init__(); self.ops = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "to":
            t = args[0]; target = kwargs.get("dtype") if kwargs else None
            target = target or next((a for a in args[1:] if isinstance(a, torch.dtype)), None)
            if target is None or target == t.dtype:
                return func(*args, **(kwargs or {}))
        if name not in VIEWS and not name.startswith("sym_"):
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

def ops(name, layers):
    spec = get_model(name)
    c = copy.deepcopy(spec.config)
    c["num_hidden_layers"] = layers
    h = c["num_attention_heads"]; kv = c.get("num_key_value_heads", h)
    c.update(hidden_size=16 * 4, num_attention_heads=4, num_key_value_heads=max(1, 4 * kv // h),
             intermediate_size=128, vocab_size=256, head_dim=16)
    for k in ("moe_intermediate_size",):
        if k in c: c[k] = 32
    cfg = AutoConfig.for_model(**c)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    m.set_attn_implementation("sdpa")
    ids = torch.randint(0, 100, (1, 16))
    with torch.inference_mode():
        out = m(ids, use_cache=True)
        cache = out.past_key_values
        nxt = torch.randint(0, 100, (1, 1))
        mask = torch.ones(1, 17, dtype=torch.long)
        with Count() as k:
            m(nxt, past_key_values=cache, attention_mask=mask, use_cache=True)
    return k.ops

for name in sys.argv[1:]:
    a, b = ops(name, 1), ops(name, 2)
    per = b - a
    print(name, "per layer", sum(per.values()), "rest", sum(a.values()) - sum(per.values()))
    print("   ", dict(sorted(per.items())))
