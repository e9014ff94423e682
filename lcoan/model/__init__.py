from .attention import ATTENTION_MODES
from .network import LCoAN, LCoANConfig
from .sort import counting_sort, stable_sort

__all__ = ["ATTENTION_MODES", "LCoAN", "LCoANConfig", "counting_sort", "stable_sort"]
