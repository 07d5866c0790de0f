"""`zoo export`."""
from __future__ import annotations

import typer
from rich.text import Text

from zoo.cli.app import DeviceOpt, app
from zoo.console import out, plain


@app.command()
def export(
    run: str = typer.Argument(..., help="Run name (a trained model, not an ensemble)."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
    device: str = DeviceOpt,
) -> None:
    """Export a run for deployment into runs/<run>/export/, checked against PyTorch.

    Input: float32 RGB in [0, 1], NCHW, image_size x image_size (resize the shorter side to
    resize_side, centre-crop); normalisation and temperature scaling are inside the graph, the
    output is calibrated probabilities. Classes and preprocessing travel inside the file.

    [bold]Examples[/]
      zoo export custom_cnn-1 --format onnx
      zoo export tf_efficientnet_lite0-1 --format torchscript
    """
    from zoo.evaluate.export import export_run
    from zoo.models.runtime import Runtime

    result = export_run(run, format, runtime=Runtime.create(device, tf32=False))
    size = result.path.stat().st_size / 1e6
    out.print(Text.assemble(("exported", "bold green"), " ", plain(f"{result.path} ({size:.1f} MB)")),
              highlight=False)
    out.print(f"  parity with PyTorch on {result.parity_images}: max |Δp| = "
              f"{result.max_abs_diff:.2e} (limit {result.tolerance:.0e})", highlight=False)
