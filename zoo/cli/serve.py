"""`zoo serve`."""
from __future__ import annotations

from pathlib import Path
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
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", exists=True, dir_okay=False,
                                                help="Serve https with this certificate (PEM): phones install "
                                                     "the offline app (/app) only from https or localhost."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", exists=True, dir_okay=False,
                                               help="The certificate's private key (PEM)."),
) -> None:
    """Serve a web page and JSON API that identify minerals in uploaded photos.

    Photos of requests arriving together go through the model in one batch.

    [bold]Examples[/]
      zoo serve
      zoo serve ensemble-weighted-1 --host 0.0.0.0 --port 8080
      zoo serve --device cuda --max-batch 64 --batch-wait-ms 10
      zoo serve tf_efficientnet_lite0-1 --host 0.0.0.0 --ssl-certfile cert.pem --ssl-keyfile key.pem
    """
    from zoo.evaluate.predictor import load_predictor
    from zoo.models.runtime import Runtime
    from zoo.serve import serve as run_server
    from zoo.store.leaderboard import best_run
    from zoo.store.runs import run_dir

    runtime = Runtime.create(device)
    run = run or best_run()
    if run is None:
        raise ZooError("No finished run to serve: train one first (`zoo train custom_cnn`).")
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise ZooError("--ssl-certfile and --ssl-keyfile go together: give both (or neither, for http).")
    predictor = load_predictor(run, runtime=runtime)
    web_app = run_dir(run) / "export" / "web"
    scheme = "https" if ssl_certfile else "http"
    err.print(Text.assemble("serving ", plain(run, "bold"), plain(
        f" on {runtime.device} at {scheme}://{host}:{port}  (API docs: /docs; Ctrl-C stops)")))
    err.print(plain(f"offline app: {scheme}://{host}:{port}/app/" if (web_app / "index.html").is_file() else
                    f"no offline app at /app: `zoo export {run} --format web` makes one"))
    run_server(predictor, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
               max_batch=max_batch, batch_wait_ms=batch_wait_ms, web_app=web_app)
