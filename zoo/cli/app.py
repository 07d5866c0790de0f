"""The Typer application and the options every command shares."""
from __future__ import annotations

import typer
from typer.core import TyperGroup

from zoo.console import print_error
from zoo.errors import ZooError


class ZooGroup(TyperGroup):
    """Turns a ZooError raised by any command into its message and exit code, never a traceback."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 (click's signature)
        try:
            return super().invoke(ctx)
        except ZooError as exc:
            print_error(exc)
            ctx.exit(exc.exit_code)


app = typer.Typer(cls=ZooGroup, no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="mineral-zoo: train, rank and ensemble mineral classifiers from photos.\n\n"
                       "Data: a folder of class folders (--data or ZOO_DATA). Runs: ZOO_HOME "
                       "(default ./runs). Offline weights: ZOO_WEIGHTS_DIR.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and download datasets.")
cache_app = typer.Typer(no_args_is_help=True, help="Manage the decode cache.")
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")

DataOpt = typer.Option(None, "--data", help="Dataset folder (<class>/<image>); default $ZOO_DATA or data/minerals.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress output; print only the result.")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps "
                         "(auto: a GPU when there is one).")
TargetPrecisionOpt = typer.Option(
    None, "--target-precision", min=0.5, max=1.0,
    help="Precision that 'confident' answers must reach on validation; the confidence threshold "
         "is fitted for it (default: the recipe's trust.target_precision, 0.95).")
TtaOpt = typer.Option(False, "--tta", help="Test-time augmentation: average 5 views "
                      "(identity, flips, 90° turn, wide crop).")


def check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    """Refuse a --format value that the command does not write."""
    if fmt not in allowed:
        raise ZooError(f"Unknown --format '{fmt}': use {', '.join(allowed)}.")
