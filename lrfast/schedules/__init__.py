"""Learning-rate schedules (see :mod:`lrfast.schedules._decay` for now)."""
from ._decay import *  # noqa: F401,F403
from ._decay import (__all__, __doc__, _REGISTRY, _gallery_examples, _int, _pyplot,  # noqa: F401
                     _real, gallery_main)
