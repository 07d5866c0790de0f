"""`zoo serve`: a web page and JSON API for identifying minerals from photos."""
from zoo.serve.app import create_app, serve, serving_in_thread

__all__ = ["create_app", "serve", "serving_in_thread"]
