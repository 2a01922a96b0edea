"""Report renderers: they read runs (and the data files written beside them) and a spec, and write
markdown and PNG; :mod:`~hypermeta.reports.common` holds what they share."""
