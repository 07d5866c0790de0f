"""`zoo serve`."""
from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from zoo.cli.app import DeviceOpt, app
from zoo.console import err, plain
from zoo.errors import ZooError


@app.command()
def serve(
    run: Optional[str] = typer.Argument(None, help="Run or ensemble to serve (default: best on validation)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for phones on the LAN)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    device: str = DeviceOpt,
    max_batch: int = typer.Option(32, "--max-batch", min=1, max=256,
                                  help="Photos per forward pass at most (1: no batching)."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0.0, max=1000.0,
                                        help="How long a photo waits for others to share its forward pass."),
) -> None:
    """Serve a web page and JSON API that identify minerals in uploaded photos.

    Photos of requests arriving together go through the model in one batch.

    [bold]Examples[/]
      zoo serve
      zoo serve ensemble-weighted-1 --host 0.0.0.0 --port 8080
      zoo serve --device cuda --max-batch 64 --batch-wait-ms 10
    """
    from zoo.evaluate.predictor import load_predictor
    from zoo.models.runtime import Runtime
    from zoo.serve import serve as run_server
    from zoo.store.leaderboard import best_run

    runtime = Runtime.create(device)
    run = run or best_run()
    if run is None:
        raise ZooError("No finished run to serve: train one first (`zoo train custom_cnn`).")
    predictor = load_predictor(run, runtime=runtime)
    err.print(Text.assemble("serving ", plain(run, "bold"), plain(
        f" on {runtime.device} at http://{host}:{port}  (API docs: /docs; Ctrl-C stops)")))
    run_server(predictor, host=host, port=port, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
