"""`zoo export`."""
from __future__ import annotations

import typer
from rich.text import Text

from zoo.cli.app import DeviceOpt, app
from zoo.console import out, plain


@app.command()
def export(
    run: str = typer.Argument(..., help="Run name (a trained model, not an ensemble)."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript | tflite"),
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

    [bold]Examples[/]
      zoo export custom_cnn-1 --format onnx
      zoo export tf_efficientnet_lite0-1 --format tflite --quantize int8
      zoo export tf_efficientnet_lite0-1 --format torchscript
    """
    from zoo.evaluate.export import export_run
    from zoo.evaluate.quantize import check_quantize, quantize_export, report_path
    from zoo.models.runtime import Runtime

    check_quantize(quantize, format)
    result = export_run(run, format, runtime=Runtime.create(device, tf32=False))
    size = result.path.stat().st_size / 1e6
    out.print(Text.assemble(("exported", "bold green"), " ", plain(f"{result.path} ({size:.1f} MB)")),
              highlight=False)
    out.print(f"  parity with PyTorch on {result.parity_images}: max |Δp| = "
              f"{result.max_abs_diff:.2e} (limit {result.tolerance:.0e})", highlight=False)
    if quantize:
        _print_report(quantize_export(run, format, result.path, tolerance, force), report_path(result.path))


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
