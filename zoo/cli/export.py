"""`zoo export`."""
from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.text import Text

from zoo.cli.app import DeviceOpt, app
from zoo.console import out, plain
from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.evaluate.export import ExportResult
    from zoo.models.runtime import Runtime


@app.command()
def export(
    run: str = typer.Argument(..., help="Run name (a trained model, not an ensemble)."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript | tflite | web"),
    check: bool = typer.Option(False, "--check", help="Check the run's exported files against their "
                               "recorded sizes and sha256 instead of exporting."),
    quantize: str = typer.Option(None, "--quantize", help="int8: also write a static int8 copy "
                                 "(onnx, tflite), calibrated on training photos."),
    tolerance: float = typer.Option(1.0, "--tolerance", min=0.0,
                                    help="Most test-accuracy points the int8 copy may lose."),
    force: bool = typer.Option(False, "--force", help="Keep the int8 copy even if it loses more."),
    device: str = DeviceOpt,
) -> None:
    """Export a run for deployment into runs/<run>/export/, checked against PyTorch.

    Input: float32 RGB in [0, 1], image_size x image_size (resize the shorter side to
    resize_side, centre-crop): NCHW for onnx and torchscript, one photo NHWC for tflite.
    Normalisation and temperature scaling are inside the graph, the output is calibrated
    probabilities. Classes and preprocessing travel inside the file.

    --quantize int8 also writes model.int8.onnx / model.int8.tflite and prints size, CPU latency
    and test accuracy before and after (stored in export/quantize.<format>.json); a copy that
    loses more than --tolerance points is refused (exit 3) unless --force.
    `--format web` writes export/web/: an offline web app (install it on a phone) around the ONNX file.

    [bold]Examples[/]
      zoo export custom_cnn-1 --format onnx
      zoo export tf_efficientnet_lite0-1 --format tflite --quantize int8
      zoo export tf_efficientnet_lite0-1 --format torchscript
      zoo export tf_efficientnet_lite0-1 --format web
      zoo export tf_efficientnet_lite0-1 --check
    """
    from zoo.models.runtime import Runtime

    if check:
        return _check(run)
    from zoo.evaluate.export import FORMATS
    from zoo.evaluate.quantize import check_quantize, quantize_export, report_path

    if format not in (*FORMATS, "web"):
        raise ZooError(f"Unknown export --format '{format}': use {', '.join(FORMATS)} or web.")
    check_quantize(quantize, format)
    runtime = Runtime.create(device, tf32=False)
    result = _export_web(run, runtime) if format == "web" else _export_file(run, format, runtime)
    out.print(f"  parity with PyTorch on {result.parity_images}: max |Δp| = "
              f"{result.max_abs_diff:.2e} (limit {result.tolerance:.0e})", highlight=False)
    if quantize:
        _print_report(quantize_export(run, format, result.path, tolerance, force), report_path(result.path))


def _export_web(run: str, runtime: Runtime) -> ExportResult:
    from zoo.evaluate.webapp import export_web

    web = export_web(run, runtime=runtime)
    out.print(Text.assemble(("exported", "bold green"), " ", plain(
        f"{web.folder}/ (first load {web.first_load_bytes / 1e6:.1f} MB)")), highlight=False)
    out.print("  serve the folder over https (or `zoo serve RUN`, at /app) and open it once; it then "
              "works offline", highlight=False)
    return web.onnx


def _export_file(run: str, format: str, runtime: Runtime) -> ExportResult:
    from zoo.evaluate.export import export_run

    result = export_run(run, format, runtime=runtime)
    size = result.path.stat().st_size / 1e6
    out.print(Text.assemble(("exported", "bold green"), " ", plain(f"{result.path} ({size:.1f} MB)")),
              highlight=False)
    return result


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


def _print_report(report: dict, path: object) -> None:
    out.print(Text.assemble(("quantized", "bold green"), " ",
                            plain(f"{path.parent / report['int8']}")), highlight=False)
    out.print(f"  {'':8}{'size':>10}{'latency':>11}{'test accuracy':>15}", highlight=False)
    for name, row in (("float32", report["before"]), ("int8", report["after"])):
        out.print(f"  {name:8}{row['size_mb']:>7.2f} MB{row['latency_ms']:>8.2f} ms{row['accuracy']:>15.4f}",
                  highlight=False)
    forced = " (kept by --force)" if report["forced"] else ""
    out.print(f"  accuracy drop {report['accuracy_drop_points']:.2f} points (limit "
              f"{report['tolerance_points']:g}){forced}; {report['calibration_photos']} calibration, "
              f"{report['test_photos']} test photos, {report['threads']} threads", highlight=False)
    out.print(f"  report: {path}", highlight=False)
