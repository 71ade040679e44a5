"""bbvi-kit's built-in model plugins (installed as the ``bbvi_kit_plugins`` package).

They register through the ``bbvi_kit.models`` entry points in pyproject.toml, the same public
mechanism a third-party package uses, and through ``@register_model`` when imported.
"""
