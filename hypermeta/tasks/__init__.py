"""Task families (:mod:`~hypermeta.tasks.families`: contexts, task ids, the plugin registry) and task
features (:mod:`~hypermeta.tasks.features`: what the meta-learner sees of an environment)."""
