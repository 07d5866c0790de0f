"""`zoo serve`."""
from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from zoo.cli.app import app
from zoo.console import err, plain
from zoo.errors import ZooError


@app.command()
def serve(
    run: Optional[str] = typer.Argument(None, help="Run or ensemble to serve (default: best on validation)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for phones on the LAN)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
) -> None:
    """Serve a web page and JSON API that identify minerals in uploaded photos.

    [bold]Examples[/]
      zoo serve
      zoo serve ensemble-weighted-1 --host 0.0.0.0 --port 8080
    """
    from zoo.evaluate.predictor import load_predictor
    from zoo.serve import serve as run_server
    from zoo.store.leaderboard import best_run

    run = run or best_run()
    if run is None:
        raise ZooError("No finished run to serve: train one first (`zoo train custom_cnn`).")
    predictor = load_predictor(run)
    err.print(Text.assemble("serving ", plain(run, "bold"), plain(f" on http://{host}:{port}  (API "
                                                                  "docs: /docs; Ctrl-C stops)")))
    run_server(predictor, host=host, port=port)
