"""Task families shipped with hypermeta (``hypermeta_plugins``).

They are registered through the ``hypermeta.plugins`` entry-point group in ``pyproject.toml``, exactly
like a third-party plugin would be: see the README, "Writing a task-family plugin".
"""
