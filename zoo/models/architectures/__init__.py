"""The zoo's own architectures, one module each; importing this package registers all of them.

A new architecture is one file here with one ``@register_model`` function: nothing else to edit.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
