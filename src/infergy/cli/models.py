"""`infergy models`: the model catalog."""

from __future__ import annotations

from rich.table import Table

from infergy.cli.app import app, out
from infergy.models import get_model, model_names


@app.command()
def models():
    """List the model catalog: architectures with the facts of their public configs."""
    table = Table(title="Model catalog", title_justify="left")
    for col in ("name", "architecture", "parameters", "context",
                "Hugging Face ids (accepted as names)"):
        table.add_column(col)
    for name in model_names():
        spec = get_model(name)
        params = spec.published_params
        formerly = f" (formerly {', '.join(spec.former_names)})" if spec.former_names else ""
        table.add_row(name + formerly, spec.config.get("model_type", "?"),
                      "n/a" if params is None else f"{params / 1e9:.2f}B",
                      str(spec.max_context),
                      ", ".join(filter(None, (spec.hf_id, *spec.aliases))) or "(test model)")
    out.print(table)
