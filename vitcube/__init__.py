"""vitcube: Bayesian-optimisation architecture search for MobileViT under a MAC budget.

The one import name of the distribution. Its subpackages are the repository's top-level folders
(``vitcube.models``, ``vitcube.search``, ``vitcube.service``, ``vitcube.workers``,
``vitcube.migrations``); ``vitcube.contract`` is what travels between server and workers and
``vitcube.cli`` is the ``vitcube`` command. Importing this package imports nothing else.
"""

__version__ = "0.1.0"
