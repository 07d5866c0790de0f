"""`zoo export`."""
from __future__ import annotations

import typer
from rich.text import Text

from zoo.cli.app import DeviceOpt, app
from zoo.console import out, plain
from zoo.errors import ZooError


@app.command()
def export(
    run: str = typer.Argument(..., help="Run name (a trained model, not an ensemble)."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript | web"),
    check: bool = typer.Option(False, "--check", help="Check the run's exported files against their "
                               "recorded sizes and sha256 instead of exporting."),
    device: str = DeviceOpt,
) -> None:
    """Export a run for deployment into runs/<run>/export/, checked against PyTorch.

    Input: float32 RGB in [0, 1], NCHW, image_size x image_size (resize the shorter side to
    resize_side, centre-crop); normalisation and temperature scaling are inside the graph, the
    output is calibrated probabilities. Classes and preprocessing travel inside the file.
    `--format web` writes export/web/: an offline web app (install it on a phone) around the ONNX file.

    [bold]Examples[/]
      zoo export custom_cnn-1 --format onnx
      zoo export tf_efficientnet_lite0-1 --format torchscript
      zoo export tf_efficientnet_lite0-1 --format web
      zoo export tf_efficientnet_lite0-1 --check
    """
    from zoo.models.runtime import Runtime

    if check:
        return _check(run)
    from zoo.evaluate.export import FORMATS

    if format not in (*FORMATS, "web"):
        raise ZooError(f"Unknown export --format '{format}': use {', '.join(FORMATS)} or web.")
    runtime = Runtime.create(device, tf32=False)
    if format == "web":
        from zoo.evaluate.webapp import export_web

        web = export_web(run, runtime=runtime)
        result = web.onnx
        out.print(Text.assemble(("exported", "bold green"), " ", plain(
            f"{web.folder}/ (first load {web.first_load_bytes / 1e6:.1f} MB)")), highlight=False)
        out.print("  serve the folder over https (or `zoo serve RUN`, at /app) and open it once; it then "
                  "works offline", highlight=False)
    else:
        from zoo.evaluate.export import export_run

        result = export_run(run, format, runtime=runtime)
        size = result.path.stat().st_size / 1e6
        out.print(Text.assemble(("exported", "bold green"), " ", plain(f"{result.path} ({size:.1f} MB)")),
                  highlight=False)
    out.print(f"  parity with PyTorch on {result.parity_images}: max |Δp| = "
              f"{result.max_abs_diff:.2e} (limit {result.tolerance:.0e})", highlight=False)


def _check(run: str) -> None:
    """Every export folder of ``run`` against its files.json; exit 2 listing what differs."""
    from zoo.evaluate.export_files import MANIFEST, check_exports
    from zoo.store.runs import run_dir

    results = check_exports(run_dir(run) / "export")
    bad = [r for r in results if r.problems]
    for r in results:
        verdict = ("damaged", "bold red") if r.problems else ("ok", "bold green")
        out.print(Text.assemble(verdict, " ", plain(f"{r.folder}/ ({r.checked} files checked)")), highlight=False)
    if bad:
        lines = [f"  {r.folder.name}/{p}" for r in bad for p in r.problems]
        raise ZooError("The export of '" + run + "' does not match its " + MANIFEST + ":\n" + "\n".join(lines)
                       + f"\nExport it again (`zoo export {run} --format ...`) to rewrite the damaged files.")
