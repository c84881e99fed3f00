import os
import sys

# Test helpers (model_factory, layer_factory, ...) live next to the tests.
sys.path.insert(0, os.path.dirname(__file__))
