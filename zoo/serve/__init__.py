"""`zoo serve`: a web page and JSON API for identifying minerals from photos."""
from zoo.serve.app import create_app, run_in_thread, serve

__all__ = ["create_app", "run_in_thread", "serve"]
